"""Shared fixtures: the project root, its schema files and the assets beside the checkout (../shared).

A missing asset is a setup error, never a skip: :func:`require_asset` fails the test naming the file."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT.parent / "shared").resolve()
CONFIG_SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
SAMPLES_SCHEMA = ROOT / "workflow/schemas/samples.schema.yaml"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = ROOT / "tests/data/tiny/config.yaml"
TINY_FRAMES = ("results/frames/tree.zarr", "results/frames/dog.zarr")


def require_asset(path: Path) -> Path:
    """``path`` if it exists; otherwise fail the test, naming the missing file."""
    if not path.exists():
        pytest.fail(f"test asset missing: {path} (clone the project with shared/ beside it)")
    return path


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared() -> Path:
    return require_asset(SHARED / "data").parent


@pytest.fixture(scope="session")
def _default_config() -> dict:
    with open(ROOT / "config.yaml") as fh:
        return yaml.safe_load(fh)


@pytest.fixture
def base_config(_default_config) -> dict:
    """A fresh copy of the default config.yaml, safe to mutate."""
    return copy.deepcopy(_default_config)


def snakemake(workdir: Path, *args: str, config: Path | None = TINY, check: bool = True) -> subprocess.CompletedProcess:
    """Run the workflow with ``--directory workdir`` (results and .snakemake/ land there), 2 cores."""
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2"]
    if config is not None:
        # --replace-workflow-config: the tiny config stands alone, not merged over config.yaml.
        cmd += ["--configfile", str(config), "--replace-workflow-config"]
    proc = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd + list(args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The working directory of one tiny end-to-end run, shared by the tests that read its results
    (several minutes, so built once per session): the frames targets alone first, then the default
    target. Tests only read it; none may change it."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    snakemake(workdir, *TINY_FRAMES)
    snakemake(workdir)
    return workdir


def assert_curve_close(rows: list[list[str]], pinned: list[list[str]], rtol: float = 2e-3) -> None:
    """A loss curve (rows of TSV cells, no header) against a pinned one: same steps, values within
    ``rtol``. Bit-exact pins break across CPU kinds (vector kernels round differently); a changed
    data order, random draw or update moves these values by far more than ``rtol``."""
    assert [r[0] for r in rows] == [p[0] for p in pinned]
    got = [float(x) for r in rows for x in r[1:]]
    want = [float(x) for p in pinned for x in p[1:]]
    assert len(got) == len(want) and got == pytest.approx(want, rel=rtol, abs=1e-7), (rows, pinned)
