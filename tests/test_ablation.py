"""The ablation: plan (variants, label presets, runs), the table builder on hand-made
evaluation tables, a dry run of `snakemake ablation` on the tiny config, and the
self-supervised losses on a real-texture scene with exact ground truth."""
from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from motionrefine.config import ablation as ablation_plan
from motionrefine.report import ablation
from motionrefine.core.errors import MotionRefineError

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = ROOT / "tests/data/tiny/config.yaml"


# ------------------------------------------------------------------ plan

def test_variants_default_to_the_recipe_and_change_only_their_switches(base_config):
    specs = ablation_plan.variants(base_config)
    assert list(specs) == ["recipe", "self-label", "no-verify", "fb-only", "no-augment", "rebalance",
                           "photometric", "cycle"]
    assert specs["recipe"] == ablation_plan.RECIPE
    assert specs["self-label"] == {**ablation_plan.RECIPE, "labeller": "student"}
    assert specs["no-verify"] == {**ablation_plan.RECIPE, "checks": "none"}
    assert specs["cycle"] == {**ablation_plan.RECIPE, "mode": "cycle"}
    recipe = ablation_plan.variant_settings(base_config, specs["recipe"])
    for name, spec in specs.items():
        s = ablation_plan.variant_settings(base_config, spec)
        # Same steps, batch, crop, schedule and seed as the recipe; only the switches differ.
        assert {k: v for k, v in s.items() if k not in ("mode", "rebalance", "augment")} == \
            {k: v for k, v in recipe.items() if k not in ("mode", "rebalance", "augment")}
        assert s["augment"]["crop"] == recipe["augment"]["crop"]
        assert (s["mode"], s["rebalance"], s["augment"]["no_aug"]) == (spec["mode"], spec["rebalance"], not spec["augment"])
        # No guard judges a variant: it trains on every verified pixel, none held back.
        assert s["holdout_every"] == 0
    assert ablation_plan.label_presets(base_config) == [("student", "fb+colour"), ("teacher", "fb"),
                                                        ("teacher", "fb+colour"), ("teacher", "none")]


def test_seeds_count_from_the_finetune_seed(base_config):
    assert ablation_plan.seeds(base_config) == [0, 1, 2]  # config.yaml: 3
    spec = ablation_plan.variants(base_config)["recipe"]
    assert [ablation_plan.variant_settings(base_config, spec, i)["seed"] for i in range(3)] == [125, 126, 127]
    base_config["finetune"]["seed"] = 7
    s0, s2 = (ablation_plan.variant_settings(base_config, spec, i) for i in (0, 2))
    assert (s0["seed"], s2["seed"]) == (7, 9)
    assert {k: v for k, v in s0.items() if k != "seed"} == {k: v for k, v in s2.items() if k != "seed"}
    del base_config["ablation"]["seeds"]
    assert ablation_plan.seeds(base_config) == [0, 1, 2]  # the default is 3 too
    base_config["ablation"]["seeds"] = 1
    assert ablation_plan.seeds(base_config) == [0]
    for bad in (0, 2.5, True):
        base_config["ablation"]["seeds"] = bad
        with pytest.raises(MotionRefineError, match="ablation.seeds"):
            ablation_plan.seeds(base_config)
    base_config["ablation"]["seeds"] = 2
    evals = ablation_plan.evaluations(base_config, ["tree"])
    assert len(evals) == 8 * 2 and evals[0] == ("recipe", "heldout", 0, "results/ablation/eval/heldout/recipe/seed0.csv")
    assert ablation_plan.refined_path("cycle", "heldout", 1) == "results/ablation/finetune/cycle/seed1/refined.pth"
    assert ablation_plan.refined_path("cycle", "realtex__s0", 1) == \
        "results/ablation/finetune/cycle/realtex__s0/seed1/refined.pth"


def test_the_main_chain_labels_serve_their_own_preset(base_config):
    assert ablation_plan.main_labeller(base_config) == "teacher"
    store = lambda *a: ablation_plan.label_store(base_config, *a, "tree")
    assert store("teacher", "fb+colour") == "results/labels/flow/tree.zarr"
    assert store("teacher", "none") == "results/ablation/labels/teacher/none/tree.zarr"
    assert store("student", "fb+colour") == "results/ablation/labels/student/fb+colour/tree.zarr"
    # The teacher's labels verify the teacher's flow; self-labelling verifies the student's own.
    assert ablation_plan.labeller_flow(base_config, "teacher", "tree") == "results/teacher/tree.zarr"
    assert ablation_plan.labeller_flow(base_config, "student", "tree") == "results/flow/raft-small/tree.zarr"
    assert ablation_plan.train_index({"labeller": "student", "checks": "fb"}, "heldout") == \
        "results/ablation/train/student/fb/heldout.json"
    base_config["verify"]["checks"] = "fb"
    assert store("teacher", "fb") == "results/labels/flow/tree.zarr"
    assert store("teacher", "fb+colour") == "results/ablation/labels/teacher/fb+colour/tree.zarr"
    # A configured teacher that is the student: the main chain is self-labelled.
    base_config["teacher"] = {"scales": [1], "iters": base_config["model"]["iters"], "flip": False}
    assert ablation_plan.main_labeller(base_config) == "student"
    # Its labels were verified with the config's thresholds, so self-labelling (the paper's) makes its own.
    assert store("student", "fb") == "results/ablation/labels/student/fb/tree.zarr"
    assert store("teacher", "fb") == "results/labels/flow/tree.zarr"
    assert ablation_plan.labeller_flow(base_config, "teacher", "tree") == "results/flow/raft-small/tree.zarr"


def test_self_labelling_verifies_with_the_papers_thresholds():
    from motionrefine.config.settings import LabelSettings

    config_labels = LabelSettings(alpha=0.002, beta=0.5, colour=0.02, max_flow=400.0, checks="fb+colour",
                                  speed_bins=(0, 1, 2, 4.5), batch_size=4, colour_norm="gradient")
    student = ablation_plan.label_settings(config_labels, "student", "fb")
    assert (student.alpha, student.beta, student.colour, student.colour_norm, student.checks) == \
        (0.002, 0.1, 0.005, "raw", "fb")
    teacher = ablation_plan.label_settings(config_labels, "teacher", "none")
    assert teacher == config_labels._replace(checks="none")


def test_runs_and_errors(base_config):
    samples = ["tree", "dog_run", "carphone"]
    runs = ablation_plan.runs(base_config, samples)
    assert list(runs) == ["heldout"] and runs["heldout"]["train"] == samples
    assert [s.video for s in runs["heldout"]["eval"]] == ["realtex__s0", "realtex__s1", "realtex__s2",
                                                         "realtex_test__s0", "realtex_test__s1", "rigid_test__s0",
                                                         "middlebury__motorcycle"]
    base_config["ablation"]["transductive"] = True
    runs = ablation_plan.runs(base_config, samples)
    assert runs["realtex__s1"]["train"] == ["realtex__s1"] and runs["realtex__s1"]["protocol"] == "transductive"
    base_config["ablation"]["variants"] = {"recipe": {}, "odd": {"lr": 1.0}}
    with pytest.raises(MotionRefineError, match="unknown switches"):
        ablation_plan.variants(base_config)
    no_scenes = {**base_config, "benchmarks": {}}
    assert ablation_plan.runs(no_scenes, samples) == {}  # parsing a config without scenes must not fail
    with pytest.raises(MotionRefineError, match="benchmark scenes"):
        ablation_plan.check_runs(no_scenes, samples)


# ------------------------------------------------------------------ table

def _eval_csv(path: Path, run: str, rows: list[tuple]) -> str:
    """rows: (scene, model, epe, acc_1px, acc_3px, fl_all) as the evaluate script writes them."""
    df = pd.DataFrame([{"run": run, "scene": s, "epe": e, "acc_1px": a1, "acc_3px": a3, "acc_5px": a3,
                        "fl_all": fl, "benchmark": "bench", "model": m, "checkpoint_sha256": "x", "pairs": 3,
                        "iters": 12} for s, m, e, a1, a3, fl in rows])
    df.to_csv(path, index=False)
    return str(path)


def test_table_from_hand_made_evaluations(tmp_path):
    recipe = _eval_csv(tmp_path / "recipe.csv", "heldout", [
        ("a", "pretrained", 2.0, 0.50, 0.90, 0.10), ("a", "refined", 1.5, 0.60, 0.95, 0.06),
        ("b", "pretrained", 4.0, 0.30, 0.70, 0.30), ("b", "refined", 5.0, 0.20, 0.65, 0.34)])
    photo = _eval_csv(tmp_path / "photo.csv", "heldout", [
        ("a", "pretrained", 2.0, 0.50, 0.90, 0.10), ("a", "refined", 3.0, 0.40, 0.80, 0.20),
        ("b", "pretrained", 4.0, 0.30, 0.70, 0.30), ("b", "refined", 4.0, 0.30, 0.70, 0.30)])
    specs = {"recipe": dict(ablation_plan.RECIPE), "photometric": {**ablation_plan.RECIPE, "mode": "photometric"}}
    out = tmp_path / "out"
    table = ablation.build_ablation([("recipe", 0, recipe), ("photometric", 0, photo)], specs,
                                    str(out / "table.csv"), str(out / "table.md"), str(out / "figure.png"))
    t = pd.read_csv(out / "table.csv").set_index("variant")
    assert list(t.index) == ["recipe", "photometric"] and len(table) == 2
    # recipe: a 2.0 -> 1.5 is -25 %, b 4.0 -> 5.0 is +25 %: mean change 0 %, while the mean EPE
    # rises 3.0 -> 3.25 (+8.3 %): the table reports the mean of the per-scene changes.
    assert t.loc["recipe", "epe_before"] == pytest.approx(3.0)
    assert t.loc["recipe", "epe_after"] == pytest.approx(3.25)
    assert t.loc["recipe", "epe_change_pct"] == pytest.approx(0.0)
    assert t.loc["recipe", "epe_change_pct_bench/a"] == pytest.approx(-25.0)
    assert t.loc["recipe", "epe_change_pct_bench/b"] == pytest.approx(25.0)
    assert t.loc["recipe", "scenes_improved"] == 1
    assert t.loc["recipe", "acc_1px_before"] == pytest.approx(0.40)
    assert t.loc["recipe", "acc_1px_after"] == pytest.approx(0.40)
    # Each row says what it still does differently from the method it is named after.
    md = (out / "table.md").read_text()
    assert "'brox' occlusion test" in md and "this project's teacher" in md
    assert t.loc["recipe", "acc_3px_after"] == pytest.approx(0.80)
    assert t.loc["recipe", "fl_all_after"] == pytest.approx(0.20)
    # photometric: +50 % and 0 % -> +25 %.
    assert t.loc["photometric", "epe_change_pct"] == pytest.approx(25.0)
    assert t.loc["photometric", "epe_change_pct_bench/a"] == pytest.approx(50.0)
    assert t.loc["photometric", "scenes_improved"] == 0
    assert t.loc["photometric", "mode"] == "photometric" and t.loc["recipe", "checks"] == "fb+colour"
    md = (out / "table.md").read_text()
    assert "| recipe | labels | teacher | fb+colour | yes | no | 3.000 | 3.250 | +0.00 | 1/2 | 1 | -25.0 | +25.0 |" in md
    assert "| photometric | photometric |" in md and "+25.00" in md
    assert "largest difference between variants on one scene: 0 px" in md
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_keeps_protocols_apart_and_measures_the_before_spread(tmp_path):
    held = _eval_csv(tmp_path / "h.csv", "heldout", [("a", "pretrained", 2.0, .5, .9, .1),
                                                     ("a", "refined", 1.0, .5, .9, .1)])
    trans = _eval_csv(tmp_path / "t.csv", "bench__a", [("a", "pretrained", 2.5, .5, .9, .1),
                                                       ("a", "refined", 2.0, .5, .9, .1)])
    evals = ablation.load_evals([("recipe", 0, held), ("recipe", 0, trans)])
    table = ablation.ablation_table(evals)
    assert list(table["protocol"]) == ["heldout", "transductive"]
    assert list(table["epe_change_pct"]) == pytest.approx([-50.0, -20.0])
    assert ablation.before_spread(evals) == 0.0  # different protocols are not compared
    other = _eval_csv(tmp_path / "o.csv", "heldout", [("a", "pretrained", 2.1, .5, .9, .1),
                                                      ("a", "refined", 1.0, .5, .9, .1)])
    assert ablation.before_spread(ablation.load_evals([("recipe", 0, held), ("x", 0, other)])) == pytest.approx(0.1)
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"run": ["heldout"], "scene": ["a"]}).to_csv(bad, index=False)
    with pytest.raises(MotionRefineError, match="not an evaluation table"):
        ablation.load_evals([("recipe", 0, str(bad))])


def test_table_gives_mean_and_sd_over_seeds(tmp_path):
    """Three seeds of one variant on two scenes: per seed the mean of the per-scene changes,
    then mean ± sample sd over the seeds, overall and per scene; markdown 'm ± sd'."""
    changes = {0: (-10.0, 20.0), 1: (-20.0, 10.0), 2: (-30.0, 30.0)}  # % on scenes a (EPE 2) and b (EPE 4)
    items = []
    for seed, (ca, cb) in changes.items():
        items.append(("recipe", seed, _eval_csv(tmp_path / f"r{seed}.csv", "heldout", [
            ("a", "pretrained", 2.0, .5, .9, .1), ("a", "refined", 2.0 * (1 + ca / 100), .5, .9, .1),
            ("b", "pretrained", 4.0, .5, .9, .1), ("b", "refined", 4.0 * (1 + cb / 100), .5, .9, .1)])))
    out = tmp_path / "out"
    table = ablation.build_ablation(items, {"recipe": dict(ablation_plan.RECIPE)}, str(out / "t.csv"),
                                    str(out / "t.md"), str(out / "f.png"), settings={"steps": 5, "seed": 125})
    r = table.set_index("variant").loc["recipe"]
    seed_means = [np.mean(v) for v in changes.values()]  # 5, -5, 0
    assert r["seeds"] == 3
    assert r["epe_change_pct"] == pytest.approx(np.mean(seed_means))
    assert r["epe_change_pct_sd"] == pytest.approx(np.std(seed_means, ddof=1))  # 5.0
    assert r["epe_change_pct_bench/a"] == pytest.approx(-20.0)
    assert r["epe_change_pct_bench/a_sd"] == pytest.approx(10.0)
    assert r["epe_change_pct_bench/b"] == pytest.approx(20.0)
    after = [np.mean([2 * (1 + ca / 100), 4 * (1 + cb / 100)]) for ca, cb in changes.values()]
    assert r["epe_after"] == pytest.approx(np.mean(after)) and r["epe_after_sd"] == pytest.approx(np.std(after, ddof=1))
    assert r["scenes_improved"] == 1 and r["epe_before"] == pytest.approx(3.0)
    md = (out / "t.md").read_text()
    assert "| +0.00 ± 5.00 | 1/2 | 3 | -20.0 ± 10.0 | +20.0 ± 10.0 |" in md, md
    assert "seeds 125..127" in md
    assert ablation.mean_sd(1.5, float("nan"), ".2f") == "1.50"
    assert (out / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ workflow dry run

def _tiny_config(tmp_path: Path, **extra) -> Path:
    """The tiny config with one generated scene and the given sections (stands alone)."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["benchmarks"] = {"tinytex": {"kind": "real-texture", "sources": ["tree", "dog"], "scenes": 1,
                                     "presets": ["easy"], "size": [64, 96], "frames": 4, "seed": 0}}
    cfg.update(copy.deepcopy(extra))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _dry_run_jobs(tmp_path: Path, config: Path) -> dict[str, list[str]]:
    """rule -> output lines of the jobs `snakemake ablation -n` would run."""
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path / "run"), "--cores", "2",
           "--configfile", str(config), "--replace-workflow-config", "-n", "ablation"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=rule |localrule )", proc.stdout):
        m = re.match(r"(?:local)?rule (\w+):", block)
        out = re.search(r"^\s+output: (.*)$", block, re.M)
        if m and out:
            jobs.setdefault(m.group(1), []).append(out.group(1))
    return jobs


def test_dry_run_builds_one_finetune_per_variant_and_seed_and_the_right_label_presets(tmp_path):
    jobs = _dry_run_jobs(tmp_path, _tiny_config(tmp_path, ablation={"seeds": 2}))
    names = list(ablation_plan.DEFAULT_VARIANTS)
    finetunes = sorted(o.split(",")[0] for o in jobs["ablation_finetune"])
    assert finetunes == sorted(f"results/ablation/finetune/{v}/seed{i}/refined.pth" for v in names for i in (0, 1))
    assert sorted(jobs["ablation_evaluate"]) == sorted(f"results/ablation/eval/heldout/{v}/seed{i}.csv"
                                                       for v in names for i in (0, 1))
    # teacher/fb+colour (the config's own preset) comes from the main label chain; the others are
    # extra, self-labelling's from the student's own flow.
    assert sorted(jobs["ablation_labels"]) == sorted(f"results/ablation/labels/{p}/{v}.zarr"
                                                     for p in ("teacher/none", "teacher/fb", "student/fb+colour")
                                                     for v in ("tree", "dog"))
    # The main labels job writes the teacher's flow beside its labels; teacher/none and teacher/fb verify it.
    assert sorted(jobs["labels"]) == [f"results/labels/flow/{v}.zarr, results/teacher/{v}.zarr" for v in ("dog", "tree")]
    assert sorted(jobs["ablation_aggregate"]) == sorted(f"results/ablation/train/{p}/heldout.json" for p in
                                                        ("teacher/fb", "teacher/fb+colour", "teacher/none",
                                                         "student/fb+colour"))
    assert "finetune" not in jobs
    assert len(jobs["ablation"]) == 1 and "results/ablation/table.csv" in jobs["ablation"][0]


def test_dry_run_labels_verify_the_labellers_flow(tmp_path):
    """The teacher presets' labels read the teacher's store, self-labelling's the student's."""
    cfg = _tiny_config(tmp_path, ablation={"seeds": 1, "variants": {"fb-only": {"checks": "fb"},
                                                                    "self-label": {"labeller": "student"}}})
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path / "run"), "--cores", "2",
           "--configfile", str(cfg), "--replace-workflow-config", "-n", "-p", "ablation"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    blocks = {m.group(1): m.group(0) for m in re.finditer(r"rule ablation_labels:.*?output: (\S+).*?(?=\n\n)",
                                                          out.stdout, re.S)}
    assert "input: results/frames/tree.zarr, results/teacher/tree.zarr" in blocks[
        "results/ablation/labels/teacher/fb/tree.zarr"]
    assert "input: results/frames/tree.zarr, results/flow/raft-small/tree.zarr" in blocks[
        "results/ablation/labels/student/fb+colour/tree.zarr"]


def test_dry_run_with_chosen_variants_and_transductive(tmp_path):
    cfg = _tiny_config(tmp_path, verify={"checks": "fb"},
                       ablation={"heldout": True, "transductive": True, "seeds": 1,
                                 "variants": {"recipe": {}, "fb-only": {"checks": "fb"}, "cycle": {"mode": "cycle"}}})
    jobs = _dry_run_jobs(tmp_path, cfg)
    # One heldout fine-tune per variant, and (one scene) one transductive fine-tune per variant
    # on the scene's own frames.
    assert sorted(o.split(",")[0] for o in jobs["ablation_finetune"]) == sorted(
        f"results/ablation/finetune/{v}{run}/seed0/refined.pth" for v in ("recipe", "fb-only", "cycle")
        for run in ("", "/tinytex__s0"))
    # verify.checks is fb here, so the main chain serves fb and only fb+colour is extra.
    assert sorted(jobs["ablation_labels"]) == sorted(f"results/ablation/labels/teacher/fb+colour/{v}.zarr"
                                                     for v in ("tree", "dog", "tinytex__s0"))
    assert len(jobs["ablation_evaluate"]) == 6


# ------------------------------------------------------------------ losses on a real-texture scene

def test_photometric_loss_of_the_exact_flow_of_a_real_texture_scene_is_near_zero(shared):
    """Rigid layered scene textured with real frames: on pixels the ground truth marks as
    clean (not occluded, not on a blended layer edge), warping frame t+1 by the exact flow
    reproduces frame t, so the photometric loss is ~0, and far below that of a wrong flow."""
    import cv2

    from motionrefine.bench import synth
    from motionrefine.flow.losses import cycle_loss, photometric_loss

    files = sorted((shared / "data/frames/dog_run").glob("*.jpg"))
    sources = []
    for f in (files[0], files[len(files) // 2]):
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        sources.append(np.ascontiguousarray(cv2.resize(img, (160, 90), interpolation=cv2.INTER_AREA)[..., ::-1]))
    seq = synth.render_sequence(sources, synth.make_config("easy", height=64, width=96, frames=3, layers=(2, 2),
                                                           camera_motion=1.5, layer_speed=2.5, n_tracks=8, seed=3))
    frames = seq.frames_clean if seq.frames_clean is not None else seq.frames
    i1 = torch.from_numpy(frames[:-1].astype(np.float32)).permute(0, 3, 1, 2)
    i2 = torch.from_numpy(frames[1:].astype(np.float32)).permute(0, 3, 1, 2)
    flow = torch.from_numpy(seq.flow_fw).permute(0, 3, 1, 2)
    clean = torch.from_numpy(np.stack([synth.clean_pairs(seq, t, "fw") for t in range(len(seq.flow_fw))]))
    assert clean.float().mean() > 0.3
    exact = photometric_loss(i1, i2, flow, clean).item()
    wrong = photometric_loss(i1, i2, flow + 1.0, clean).item()
    still = photometric_loss(i1, i2, torch.zeros_like(flow), clean).item()
    # Measured: exact 0.0047, +1 px 0.031, zero flow 0.033.
    assert exact < 0.01 and exact < wrong / 5 and exact < still / 5, (exact, wrong, still)
    # The census loss (the baselines' data term) agrees, less sharply: on smooth real textures
    # the uint8 rounding flips census bits of near-equal neighbours. Measured: exact 1.54,
    # +1 px 2.72, zero flow 2.72.
    from motionrefine.flow.losses import census_loss
    c_exact, c_wrong, c_still = (census_loss(i1, i2, f, clean).item() for f in (flow, flow + 1.0, flow * 0))
    assert c_exact < 0.7 * c_wrong and c_exact < 0.7 * c_still, (c_exact, c_wrong, c_still)
    # The exact backward flow inverts the forward flow on the same pixels.
    bw = torch.from_numpy(seq.flow_bw).permute(0, 3, 1, 2)
    assert cycle_loss(flow, bw, clean).item() < 0.05
    assert cycle_loss(flow, bw + 1.0, clean).item() > 1.0


def test_report_shows_the_ablation_table_only_when_it_exists(tmp_path):
    from motionrefine.report.page import ablation_section

    d = tmp_path / "ablation"
    assert ablation_section(d / "table.md", d / "figure.png") == ("", "")
    held = _eval_csv(tmp_path / "h.csv", "heldout", [("a", "pretrained", 2.0, .5, .9, .1),
                                                     ("a", "refined", 1.0, .5, .9, .1)])
    ablation.build_ablation([("recipe", 0, held)], {"recipe": dict(ablation_plan.RECIPE)}, str(d / "table.csv"),
                            str(d / "table.md"), str(d / "figure.png"))
    md, html = ablation_section(d / "table.md", d / "figure.png")
    assert md.startswith("\n## Ablation") and (d / "table.md").read_text() in md
    assert re.search(r"<h2>[^<]*Ablation[^<]*</h2>", html) and "data:image/png;base64," in html and "| recipe |" in html
