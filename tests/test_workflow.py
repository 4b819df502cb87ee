"""The Snakemake workflow itself: lint, dry run of the default config, and a tiny end-to-end run.

Every run uses its own --directory (results and .snakemake/ land in tmp_path), so tests
never touch the checkout's results/ nor lock it against other runs.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
import zarr

from conftest import ROOT, TINY_FRAMES, snakemake


def test_lint_reports_no_problems(tmp_path):
    proc = snakemake(tmp_path, "--lint", config=None)
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_default_config_dry_run(tmp_path):
    # Also checks that config.yaml next to the Snakefile is found from another working directory.
    proc = snakemake(tmp_path, "-n", "--quiet", "rules", config=None)
    out = proc.stdout + proc.stderr
    # 3 sample videos; 6 generated scenes (3 dev, 3 test) + Motorcycle enter the chain as videos
    # too, labelled by the teacher inside the labels job (no teacher flow store); the test scenes'
    # 4 outside textures are decoded; one fine-tune and guard per protocol run (heldout + 4
    # transductive: the dev scenes are evaluated heldout only); each sample video's delivered flow
    # (only the weights its verdict chose) and deliverables.
    expected = {"frames": "3", "texture_frames": "4", "scene_frames": "7", "benchmark_scene": "6", "labels": "10",
                "delivered_flow": "3", "deliverable": "3", "model": "1", "finetune": "5", "guard": "5",
                "evaluate": "5", "report": "1"}
    rows = {r.split()[0]: r.split()[1] for r in out.splitlines() if len(r.split()) == 2}
    for rule, count in expected.items():
        assert rows.get(rule) == count, (rule, out)


def test_retries_ask_for_more_memory_and_time(tmp_path):
    # mem_mb and runtime are the configured value times the attempt, so a resubmitted job
    # (profiles/slurm `retries`) gets more; threads and the other resources stay.
    def plan(attempt: int) -> dict[str, str]:
        proc = snakemake(tmp_path, "-n", "--attempt", str(attempt), "results/frames/tree.zarr")
        out = proc.stdout + proc.stderr
        (line,) = [ln for ln in out.splitlines() if ln.strip().startswith("resources:")]
        return dict(kv.split("=", 1) for kv in line.split(":", 1)[1].strip().split(", "))

    first, third = plan(1), plan(3)
    # The tiny config: default {mem_mb: 1000, runtime: 10}.
    assert (first["mem_mb"], first["runtime"]) == ("1000", "10")
    assert (third["mem_mb"], third["runtime"]) == ("3000", "30")


def test_every_rule_has_a_benchmark_file_outside_the_scenes(tmp_path):
    # The plan of the whole tiny run: every job writes results/benchmarks/{rule}/...tsv.
    proc = snakemake(tmp_path, "-n")
    out = proc.stdout + proc.stderr
    seen = set()
    for blk in out.split("\n\n"):
        heads = [ln.split()[1].rstrip(":") for ln in blk.splitlines() if ln.startswith(("rule ", "localrule "))]
        if not heads or heads[0] == "all":
            continue
        bench = [ln.split(":", 1)[1].strip() for ln in blk.splitlines() if ln.strip().startswith("benchmark:")]
        assert bench and bench[0].startswith(f"results/benchmarks/{heads[0]}/"), blk
        seen.add(heads[0])
    assert {"frames", "delivered_flow", "labels", "aggregate", "finetune", "guard", "evaluate", "report",
            "deliverable"} <= seen, out
    assert "results/scenes/tinytex/s0.zarr" in out


def test_export_target_plans_every_configured_format(tmp_path):
    # With tracking: the refined model's flow in each flow format, and the pseudo-label and
    # predicted tracks of each video in each track format; `export.*` narrows them.
    tracking = ROOT / "tests/data/tiny_tracking/config.yaml"

    def planned(*extra: str) -> set[str]:
        proc = snakemake(tmp_path, "-n", "export", *extra, config=tracking)
        out = proc.stdout + proc.stderr
        return {ln.split(":", 1)[1].strip() for ln in out.splitlines()
                if ln.strip().startswith("output: results/export/")}

    videos = ("tree", "dog")
    assert planned() == {f"results/export/refined-heldout/{v}.{f}" for v in videos for f in ("flo", "npy", "kitti-png")} | {
        f"results/export/tracks/{s}/{v}.{x}" for v in videos for s in ("labels", "predicted") for x in ("csv", "pkl")}
    assert planned("--config", "export={flow: [kitti-png], tracks: [tapvid]}") == {
        f"results/export/refined-heldout/{v}.kitti-png" for v in videos} | {
        f"results/export/tracks/{s}/{v}.pkl" for v in videos for s in ("labels", "predicted")}
    proc = snakemake(tmp_path, "-n", "export", "--config", "export={flow: [png]}", config=tracking, check=False)
    assert proc.returncode != 0 and "config key 'export.flow.0'" in proc.stdout + proc.stderr


def test_invalid_config_names_the_key(tmp_path):
    proc = snakemake(tmp_path, "-n", "--config", "model={iters: many}", check=False)
    assert proc.returncode != 0
    assert "config key 'model.iters': 'many' is not of type 'integer'" in proc.stderr + proc.stdout


def test_missing_checkpoint_names_the_file_and_source(tmp_path):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(f"name\tpath\tend\na\t{ROOT.parent / 'shared/data/videos/tree.avi'}\t4\n")
    empty = tmp_path / "no_assets"
    proc = snakemake(tmp_path, "-n", "--config", f"asset_root={empty}", f"samples={sheet}", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"looked for {empty}/weights/raft-small.pth" in out
    assert "https://github.com/princeton-vl/RAFT" in out
    # Frames alone do not need the checkpoint.
    snakemake(tmp_path, "results/frames/a.zarr", "-n", "--config", f"asset_root={empty}", f"samples={sheet}")


@pytest.mark.slow
def test_tiny_end_to_end(tiny_run):
    tmp_path = tiny_run  # the run of the conftest fixture: frames targets first, then the default target
    for target, indices in zip(TINY_FRAMES, ([10, 11, 12, 13, 14, 15], [0, 2, 4, 6, 8, 10])):
        g = zarr.open_group(str(tmp_path / target), mode="r")
        assert g["frames"].shape == (6, 64, 96, 3) and g["frames"].dtype == np.uint8
        assert g.attrs["frame_indices"] == indices
        assert g["frames"][:].std() > 5  # real images, not the fill value
    assert (tmp_path / "results/logs/frames/tree.log").read_text().strip()

    again = snakemake(tmp_path, *TINY_FRAMES)
    assert "Nothing to be done" in again.stdout + again.stderr

    # The whole default target: the delivered flow (the real RAFT-small checkpoint, or the refined
    # weights where the video's verdict says so), labels, a generated scene, fine-tuning,
    # before/after evaluation, the deliverables and the report.
    guard = json.loads((tmp_path / "results/finetune/heldout/guard.json").read_text())
    for video in ("tree", "dog"):
        g = zarr.open_group(str(tmp_path / f"results/flow/delivered/{video}.zarr"), mode="r")
        assert g["flow_fw"].shape == (5, 64, 96, 2) and g["flow_bw"].shape == (5, 64, 96, 2)
        assert np.isfinite(g["flow_fw"][:]).all()
        assert g.attrs["delivery"]["use"] == (guard["videos"][video]["use"] if guard["keep_refined"] else "pretrained")
        assert (tmp_path / f"results/logs/delivered_flow/{video}.log").exists()
        meta = json.loads((tmp_path / f"results/deliverables/{video}/meta.json").read_text())
        assert meta["flow"]["model"] == g.attrs["delivery"]["use"]
        lab = zarr.open_group(str(tmp_path / f"results/labels/flow/{video}.zarr"), mode="r")
        keep = lab["keep"][:]
        assert keep.shape == (5, 64, 96) and keep.dtype == bool
        # The labels are the teacher's verified flow, made inside the labels job, which also
        # wrote that flow as the teacher store (from memory); it is not the student's.
        teacher = zarr.open_group(str(tmp_path / f"results/teacher/{video}.zarr"), mode="r")
        assert teacher["flow_fw"].shape == (5, 64, 96, 2) and teacher["pair_computed"][:].all()
        assert lab.attrs["flow_store"]["fused"] is True and lab.attrs["flow_store"]["teacher"]["flip"] is True
        assert lab["labelled"][:].all() and lab.attrs["label_budget"]["labelled"] == 5
        assert keep.any() and not np.array_equal(lab["flow"][:][keep], g["flow_fw"][:][keep])
        assert not lab["flow"][:][~keep].any()
    scene = zarr.open_group(str(tmp_path / "results/scenes/tinytex/s0.zarr"), mode="r")
    assert scene["flow_fw"].shape == (3, 64, 96, 2) and scene.attrs["self_check"]["ok"]
    loss = pd.read_csv(tmp_path / "results/finetune/heldout/loss.tsv", sep="\t")
    assert list(loss["step"]) == [1, 2] and np.isfinite(loss["loss"]).all()
    ev = pd.read_csv(tmp_path / "results/eval/heldout.csv")
    assert sorted(ev["model"]) == ["pretrained", "refined", "trained"] and set(ev["scene"]) == {"s0"}
    sha = ev.set_index("model")["checkpoint_sha256"]
    # refined.pth is the guard's choice: the fine-tuned weights or the pretrained ones.
    assert sha["refined"] == sha["trained" if guard["keep_refined"] else "pretrained"]
    assert ev["epe"].notna().all() and sha["trained"] != sha["pretrained"]
    html = (tmp_path / "results/report/index.html").read_text()
    assert "s0" in html and "<img" in html
    again = snakemake(tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_failing_job_logs_the_error_and_leaves_no_output(tmp_path):
    folder = tmp_path / "frames_src"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.full((16, 24, 3), 40 * i, np.uint8))
    (folder / "notes.txt").write_text("stray")
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(f"name\tpath\nbad\t{folder}\n")
    proc = snakemake(tmp_path, "results/frames/bad.zarr", "--config", f"samples={sheet}", check=False)
    assert proc.returncode != 0
    log = (tmp_path / "results/logs/frames/bad.log").read_text()
    assert "notes.txt: not an image file" in log
    assert "notes.txt: not an image file" in proc.stderr
    assert not (tmp_path / "results/frames/bad.zarr").exists()
