"""The flow package's shape: no module over 400 lines, no import circle between its modules."""

import ast
from pathlib import Path

FLOW = Path(__file__).resolve().parents[1] / "workflow/motionrefine/flow"


def flow_imports(path: Path) -> set[str]:
    """The motionrefine.flow modules ``path`` imports, at module level or inside functions,
    including those imported only for type checking."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("motionrefine.flow."):
            out.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[2] for a in node.names if a.name.startswith("motionrefine.flow.")}
    return out


def test_flow_modules_are_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in FLOW.glob("*.py")}
    assert sizes and {name: n for name, n in sizes.items() if n > 400} == {}


def test_flow_modules_import_no_circle():
    graph = {p.stem: flow_imports(p) for p in FLOW.glob("*.py")}
    assert graph["finetune"] >= {"pairs"}  # the edge the circle went through
    state: dict[str, str] = {}

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph.get(m, ())):
            assert state.get(n) != "open", f"import circle: {' -> '.join(path + [n])}"
            if n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
