"""The Snakemake workflow itself: lint, dry run of the default config, and a tiny end-to-end run.

Every run uses its own --directory (results and .snakemake/ land in tmp_path), so tests
never touch the checkout's results/ nor lock it against other runs.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import zarr

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = ROOT / "tests/data/tiny/config.yaml"


def snakemake(workdir: Path, *args: str, config: Path | None = TINY, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2"]
    if config is not None:
        # --replace-workflow-config: the tiny config stands alone, not merged over config.yaml.
        cmd += ["--configfile", str(config), "--replace-workflow-config"]
    proc = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd + list(args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_lint_reports_no_problems(tmp_path):
    proc = snakemake(tmp_path, "--lint", config=None)
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_default_config_dry_run(tmp_path):
    # Also checks that config.yaml next to the Snakefile is found from another working directory.
    proc = snakemake(tmp_path, "-n", "--quiet", "rules", config=None)
    out = proc.stdout + proc.stderr
    # 3 sample videos; 3 generated scenes + Motorcycle enter the chain as videos too, labelled
    # by the teacher inside the labels job (no teacher flow store); one fine-tune and guard per
    # protocol run (heldout + 4 transductive); student flow of the sample videos, pretrained (tracking) and refined.
    expected = {"frames": "3", "scene_frames": "4", "benchmark_scene": "3", "labels": "7",
                "flow": "6", "finetune": "5", "guard": "5", "evaluate": "5", "report": "1"}
    rows = {r.split()[0]: r.split()[1] for r in out.splitlines() if len(r.split()) == 2}
    for rule, count in expected.items():
        assert rows.get(rule) == count, (rule, out)


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
def test_tiny_end_to_end(tmp_path):
    frames = ["results/frames/tree.zarr", "results/frames/dog.zarr"]
    snakemake(tmp_path, *frames)
    for target, indices in zip(frames, ([10, 11, 12, 13, 14, 15], [0, 2, 4, 6, 8, 10])):
        g = zarr.open_group(str(tmp_path / target), mode="r")
        assert g["frames"].shape == (6, 64, 96, 3) and g["frames"].dtype == np.uint8
        assert g.attrs["frame_indices"] == indices
        assert g["frames"][:].std() > 5  # real images, not the fill value
    assert (tmp_path / "results/logs/frames/tree.log").read_text().strip()

    again = snakemake(tmp_path, *frames)
    assert "Nothing to be done" in again.stdout + again.stderr

    # The whole default target: flow with the real RAFT-small checkpoint, labels, a generated
    # scene, fine-tuning, before/after evaluation and the report.
    snakemake(tmp_path)
    for video in ("tree", "dog"):
        g = zarr.open_group(str(tmp_path / f"results/flow/raft-small/{video}.zarr"), mode="r")
        assert g["flow_fw"].shape == (5, 64, 96, 2) and g["flow_bw"].shape == (5, 64, 96, 2)
        assert np.isfinite(g["flow_fw"][:]).all()
        assert (tmp_path / f"results/logs/flow/raft-small/{video}.log").exists()
        lab = zarr.open_group(str(tmp_path / f"results/labels/flow/{video}.zarr"), mode="r")
        keep = lab["keep"][:]
        assert keep.shape == (5, 64, 96) and keep.dtype == bool
        # The labels are the teacher's verified flow (made inside the labels job, no teacher
        # store in the default run), which is not the student's.
        assert not (tmp_path / f"results/teacher/{video}.zarr").exists()
        assert lab.attrs["flow_store"]["fused"] is True and lab.attrs["flow_store"]["teacher"]["flip"] is True
        assert lab["labelled"][:].all() and lab.attrs["label_budget"]["labelled"] == 5
        assert keep.any() and not np.array_equal(lab["flow"][:][keep], g["flow_fw"][:][keep])
        assert not lab["flow"][:][~keep].any()
    scene = zarr.open_group(str(tmp_path / "results/benchmarks/tinytex/s0.zarr"), mode="r")
    assert scene["flow_fw"].shape == (3, 64, 96, 2) and scene.attrs["self_check"]["ok"]
    loss = pd.read_csv(tmp_path / "results/finetune/heldout/loss.tsv", sep="\t")
    assert list(loss["step"]) == [1, 2] and np.isfinite(loss["loss"]).all()
    ev = pd.read_csv(tmp_path / "results/eval/heldout.csv")
    assert sorted(ev["model"]) == ["pretrained", "refined", "trained"] and set(ev["scene"]) == {"s0"}
    sha = ev.set_index("model")["checkpoint_sha256"]
    guard = json.loads((tmp_path / "results/finetune/heldout/guard.json").read_text())
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
