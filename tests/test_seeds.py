"""Seed repeats of the refinement runs (finetune.seeds): the plan's run names and seeds, the
per-run fine-tuning settings the workflow passes, and the report's mean ± sd table."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from motionrefine.config import plan
from motionrefine.report.tables import display_seeds, seeds_table

from dryrun import dry_run_jobs

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def test_runs_repeat_with_consecutive_seeds(base_config):
    base_config["finetune"]["seeds"] = 3
    base_config["finetune"]["seed"] = 7
    runs = plan.runs(base_config, ["tree", "dog_run"])
    heldout = [r for r in runs if plan.base_run(r) == plan.HELDOUT]
    assert heldout == ["heldout", "heldout.seed1", "heldout.seed2"]
    assert [runs[r]["seed"] for r in heldout] == [7, 8, 9]
    # Every base run has three repeats sharing its training videos and scenes.
    bases = {runs[r]["base"] for r in runs}
    assert len(runs) == 3 * len(bases)
    for r, spec in runs.items():
        assert spec["train"] == runs[spec["base"]]["train"]
        assert plan.protocol_of(r) == ("heldout" if spec["base"] == "heldout" else "transductive")
    # The plan's key is not a fine-tuning setting.
    assert "seeds" not in plan.finetune_settings(base_config)


def test_one_seed_keeps_the_plain_names(base_config):
    runs = plan.runs(base_config, ["tree"])
    assert all(plan.SEED_SEP not in r for r in runs)
    assert runs["heldout"]["seed"] == base_config["finetune"].get("seed", 125)


def test_base_run_only_strips_a_numbered_suffix():
    assert plan.base_run("realtex__s0.seed12") == "realtex__s0"
    assert plan.base_run("heldout") == "heldout"
    assert plan.base_run("odd.seedling") == "odd.seedling"


def _evals() -> pd.DataFrame:
    rows = []
    # Scene a: pretrained 2.0; trained 1.0 / 1.5 / 2.0 over three seeds -> -50, -25, 0 %.
    for run, trained in (("s", 1.0), ("s.seed1", 1.5), ("s.seed2", 2.0)):
        rows += [{"run": run, "benchmark": "b", "scene": "a", "model": "pretrained", "epe": 2.0},
                 {"run": run, "benchmark": "b", "scene": "a", "model": "trained", "epe": trained},
                 {"run": run, "benchmark": "b", "scene": "a", "model": "refined", "epe": min(trained, 2.0)}]
    # A single-seed run: sd undefined.
    rows += [{"run": "heldout", "benchmark": "b", "scene": "a", "model": "pretrained", "epe": 4.0},
             {"run": "heldout", "benchmark": "b", "scene": "a", "model": "trained", "epe": 5.0},
             {"run": "heldout", "benchmark": "b", "scene": "a", "model": "refined", "epe": 4.0}]
    return pd.DataFrame(rows)


def test_seeds_table_by_hand():
    t = seeds_table(_evals()).set_index("run")
    assert t.loc["s", "seeds"] == 3 and t.loc["heldout", "seeds"] == 1
    assert t.loc["s", "trained_change_mean"] == pytest.approx(-25.0)
    assert t.loc["s", "trained_change_sd"] == pytest.approx(25.0)  # sample sd of -50, -25, 0
    assert t.loc["heldout", "trained_change_mean"] == pytest.approx(25.0)
    assert t.loc["heldout", "refined_change_mean"] == pytest.approx(0.0)
    assert math.isnan(t.loc["heldout", "trained_change_sd"])
    shown = display_seeds(seeds_table(_evals())).set_index("run")
    assert shown.loc["s", "trained EPE change %"] == "-25.0 ± 25.0"
    assert shown.loc["heldout", "trained EPE change %"] == "+25.0"


def test_workflow_builds_each_seed(tmp_path, base_config):
    # Dry run of the default config with two seeds: two fine-tunes per run, the plain name first.
    base_config["finetune"]["seeds"] = 2
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(base_config))
    proc = subprocess.run([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "-n",
                           "--configfile", str(cfg)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = {out for rule, out in dry_run_jobs(proc.stdout) if rule == "finetune"}
    assert "results/finetune/heldout/trained.pth" in jobs
    assert "results/finetune/heldout.seed1/trained.pth" in jobs
    assert len(jobs) == 2 * 5  # heldout + 4 transductive runs (the test scenes; dev is heldout only), two seeds each


def test_reading_says_how_many_seeds_and_compares_labels_with_the_student():
    from motionrefine.report.page import reading
    table = pd.DataFrame([{"protocol": "transductive", "run": "s", "benchmark": "b", "scene": "a",
                           "epe_change_pct": -10.0}])
    lq = pd.DataFrame([{"benchmark": "b", "scene": "a", "kept_fraction": 0.5, "label_epe": 0.2,
                        "student_epe_on_kept": 0.6, "pretrained_epe": 1.0}])
    one = reading(table, lq, {"steps": 100, "profile": "demo", "seeds": 1})
    three = reading(table, lq, {"steps": 100, "profile": "demo", "seeds": 3})
    assert "0.600 px for the student on the same pixels (labels better on 1 of 1 scenes)" in one
    assert "no seed variance was measured" in one and "3 seeds" in three and "no seed" not in three
