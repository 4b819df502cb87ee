"""tools/benchmark_summary.py: Snakemake benchmark files -> per-rule table beside the configured resources."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools/benchmark_summary.py"
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"

sys.path.insert(0, str(ROOT / "tools"))
from benchmark_summary import resource_keys  # noqa: E402


def _bench(path: Path, seconds: float, rss) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t50\t1\n")


def test_every_rule_with_resources_is_mapped_to_its_config_key():
    keys = resource_keys()
    assert keys["flow"] == "flow" and keys["benchmark_scene"] == "benchmark"
    assert keys["label_quality"] == "evaluate" and keys["ablation_finetune"] == "finetune"
    rules = {ln.split()[1].rstrip(":") for smk in (ROOT / "workflow/rules").glob("*.smk")
             for ln in smk.read_text().splitlines() if ln.startswith("rule ")}
    assert rules - set(keys) <= {"export", "infer"}, rules - set(keys)  # these targets run nothing


def test_summary_table_flags_jobs_over_their_memory(tmp_path):
    bench = tmp_path / "results/benchmarks"
    _bench(bench / "flow/raft-small/a.tsv", 12.0, 7000.0)  # over flow's 6000 MB below
    _bench(bench / "flow/raft-small/b.tsv", 4.0, 900.0)
    _bench(bench / "flow/raft-small/c.tsv", 2.0, 800.0)
    _bench(bench / "aggregate/heldout.tsv", 0.5, "-")  # too short for a memory sample
    config = yaml.safe_load((ROOT / "tests/data/tiny/config.yaml").read_text())
    config["resources"]["flow"] = {"mem_mb": 6000, "runtime": 1}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, str(TOOL), "--dir", str(tmp_path), "--configfile", str(cfg), "--markdown"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[1:-1]]
            for ln in proc.stdout.splitlines()[2:]}
    assert rows["flow"] == ["flow", "3", "4.0", "12.0", "7000.0", "6000", "117%", "1", "20%", "OVER"]
    assert rows["aggregate"][:6] == ["aggregate", "1", "0.5", "0.5", "nan", "1000"] and rows["aggregate"][-1] == ""


def test_sums_add_each_rules_job_wall_and_cpu_seconds(tmp_path):
    bench = tmp_path / "results/benchmarks"
    _bench(bench / "flow/raft-small/a.tsv", 12.0, 700.0)
    _bench(bench / "flow/raft-small/b.tsv", 4.0, 900.0)
    _bench(bench / "aggregate/heldout.tsv", 0.5, "-")
    proc = subprocess.run([sys.executable, str(TOOL), "--dir", str(tmp_path), "--sums"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {ln.split()[0]: ln.split()[1:] for ln in proc.stdout.splitlines()[1:]}
    # _bench writes cpu_time 1 per job
    assert rows["flow"] == ["2", "16.0", "2.0"] and rows["aggregate"] == ["1", "0.5", "1.0"]
    assert rows["total"] == ["3", "16.5", "3.0"]


def test_summary_without_benchmarks_says_so(tmp_path):
    proc = subprocess.run([sys.executable, str(TOOL), "--dir", str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 1 and "results/benchmarks does not exist" in proc.stderr
