"""Per-rule wall time and peak memory from Snakemake's benchmark files, beside the configured resources.

Every rule writes ``results/benchmarks/{rule}/....tsv`` (Snakemake's ``benchmark:``: wall
seconds ``s``, peak resident memory ``max_rss`` in MB, ...). This prints one row per rule:
jobs, median and max wall seconds, max RSS, the ``mem_mb`` and ``runtime`` the rule asks for
(the first attempt's, from the config's ``resources`` section through the rule's
``res(KEY, ...)`` in workflow/rules/), and a flag where a job came near or over them.

    .venv/bin/python tools/benchmark_summary.py [--dir .] [--configfile config.yaml] [--markdown] [--sums]

``--dir`` is the run's working directory (the folder holding results/); ``--configfile`` the
config it ran with (default: the project's config.yaml). ``--sums``: instead, per rule the sums
of its jobs' wall and CPU seconds (``s``, ``cpu_time``) and the run's totals, the figures that
split a run by stage and compare machines.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from motionrefine.config.schema import rule_resources  # noqa: E402

# Resource keys the rules pick by a variable (workflow/rules/common.smk), as the default config sets it.
NAMED_KEYS = {"LABEL_JOB": "teacher"}
# Above this share of the requested memory / time a job is one input size away from failing.
NEAR = 0.8
COLUMNS = ["rule", "jobs", "wall_s_median", "wall_s_max", "max_rss_mb", "mem_mb", "rss_share", "runtime_min",
           "time_share", "flag"]


def resource_keys(rules_dir: Path = ROOT / "workflow/rules") -> dict[str, str]:
    """rule name -> the config ``resources`` key its mem_mb comes from (``res("KEY", "mem_mb")``)."""
    keys = {}
    for smk in sorted(rules_dir.glob("*.smk")):
        rule = None
        for line in smk.read_text(encoding="utf-8").splitlines():
            m = re.match(r"(?:local)?rule (\w+):", line)
            if m:
                rule = m.group(1)
                continue
            m = re.search(r'mem_mb=res\(("?)(\w+)\1, "mem_mb"\)', line)
            if m and rule:
                # A name, not a string: the labels job's key, "teacher" unless the teacher is the student.
                keys[rule] = m.group(2) if m.group(1) else NAMED_KEYS.get(m.group(2), m.group(2))
    return keys


def read_benchmarks(bench_dir: Path) -> pd.DataFrame:
    """One row per benchmark file (rule = its first folder below ``bench_dir``), with s, cpu_time
    (NaN where the file has none) and max_rss."""
    rows = []
    for tsv in sorted(bench_dir.rglob("*.tsv")):
        rule = tsv.relative_to(bench_dir).parts[0]
        df = pd.read_csv(tsv, sep="\t")
        if not {"s", "max_rss"} <= set(df.columns):
            raise SystemExit(f"{tsv}: not a Snakemake benchmark file (columns {list(df.columns)})")
        # Repeats (benchmark: repeat(...)) are rows of one file; a job's figure is its worst.
        rss = pd.to_numeric(df["max_rss"], errors="coerce")  # '-' when the job was too short to sample
        cpu = pd.to_numeric(df["cpu_time"], errors="coerce") if "cpu_time" in df else pd.Series(dtype=float)
        rows.append({"rule": rule, "job": str(tsv.relative_to(bench_dir)), "s": float(df["s"].max()),
                     "cpu_time": float(cpu.max()) if cpu.notna().any() else float("nan"),
                     "max_rss": float(rss.max()) if rss.notna().any() else float("nan")})
    return pd.DataFrame(rows, columns=["rule", "job", "s", "cpu_time", "max_rss"])


def rule_sums(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule: jobs and the sums of their wall and CPU seconds, then a ``total`` row."""
    sums = jobs.groupby("rule", sort=True).agg(jobs=("s", "size"), wall_s_sum=("s", "sum"),
                                               cpu_s_sum=("cpu_time", "sum")).reset_index()
    total = {"rule": "total", "jobs": len(jobs), "wall_s_sum": jobs["s"].sum(), "cpu_s_sum": jobs["cpu_time"].sum()}
    return pd.concat([sums, pd.DataFrame([total])], ignore_index=True)


def summarise(jobs: pd.DataFrame, config: dict, keys: dict[str, str]) -> pd.DataFrame:
    out = []
    for rule, df in jobs.groupby("rule", sort=True):
        res = rule_resources(config, keys[rule]) if rule in keys else None
        mem = res["mem_mb"] if res else float("nan")
        runtime = res["runtime"] if res else float("nan")
        rss = df["max_rss"].max()
        wall = df["s"].max()
        rss_share, time_share = rss / mem, wall / (60.0 * runtime)
        flag = ""
        if res is None:
            flag = "no mem_mb"
        elif rss_share > 1 or time_share > 1:
            flag = "OVER"
        elif rss_share > NEAR or time_share > NEAR:
            flag = "near"
        out.append({"rule": rule, "jobs": len(df), "wall_s_median": df["s"].median(), "wall_s_max": wall,
                    "max_rss_mb": rss, "mem_mb": mem, "rss_share": rss_share, "runtime_min": runtime,
                    "time_share": time_share, "flag": flag})
    return pd.DataFrame(out, columns=COLUMNS)


def load_config(path: Path) -> dict:
    """The run's config with the schema's defaults, as the workflow sees it."""
    from motionrefine.config.schema import validate_config

    with open(path, encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    validate_config(config, ROOT / "workflow/schemas/config.schema.yaml")
    return config


def format_table(table: pd.DataFrame, markdown: bool) -> str:
    shown = table.copy()
    for col in ("wall_s_median", "wall_s_max", "max_rss_mb"):
        shown[col] = shown[col].map(lambda v: f"{v:.1f}")
    for col in ("rss_share", "time_share"):
        shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{100 * v:.0f}%")
    if markdown:
        head = "| " + " | ".join(shown.columns) + " |"
        rule = "|" + "---|" * len(shown.columns)
        body = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
        return "\n".join([head, rule, *body])
    return shown.to_string(index=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("."), help="the run's working directory (holds results/)")
    ap.add_argument("--configfile", type=Path, default=ROOT / "config.yaml")
    ap.add_argument("--markdown", action="store_true", help="a markdown table (docs/performance.md)")
    ap.add_argument("--sums", action="store_true", help="per-rule sums of job wall and CPU seconds, and the totals")
    args = ap.parse_args(argv)
    bench_dir = args.dir / "results/benchmarks"
    if not bench_dir.is_dir():
        print(f"no benchmark files: {bench_dir} does not exist (run the workflow first)", file=sys.stderr)
        return 1
    jobs = read_benchmarks(bench_dir)
    if jobs.empty:
        print(f"no benchmark files under {bench_dir}", file=sys.stderr)
        return 1
    if args.sums:
        print(rule_sums(jobs).round(1).to_string(index=False))
        return 0
    table = summarise(jobs, load_config(args.configfile), resource_keys())
    print(format_table(table, args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
