"""Parallel fine-tuning trains what one process would: batch slices on CPU threads, and two
DDP processes (gloo, started by torchrun through train.launch) against one process with the
same global batch. Tiny on purpose (64×96 frames, batch 2, 4 iterations, 3 steps)."""

import json
import runpy
import shutil
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import require_asset
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import atomic_group, write_array
from motionrefine.flow.finetune import finetune
from motionrefine.flow.inference import flow_stage
from motionrefine.flow.labels import aggregate_labels, make_flow_labels
from motionrefine.models.checkpoint import load_raft
from motionrefine.train import distributed, launch
from motionrefine.train.curve import read_loss_curve
from motionrefine.train.shards import split_batch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS = SHARED / "weights" / "raft-small.pth"
FRAMES = SHARED / "data" / "frames" / "dog_run"


@pytest.fixture(scope="module")
def training_set(tmp_path_factory):
    require_asset(WEIGHTS)
    require_asset(FRAMES)
    root = tmp_path_factory.mktemp("par")
    frames = np.stack([cv2.resize(cv2.imread(str(p))[..., ::-1], (96, 64), interpolation=cv2.INTER_AREA)
                       for p in sorted(FRAMES.glob("*.jpg"))[:4]])
    fr, fl, lb = (str(root / x) for x in ("frames.zarr", "flow.zarr", "labels.zarr"))
    with atomic_group(fr) as g:
        write_array(g, "frames", np.ascontiguousarray(frames))
    flow_stage(fr, fl, str(WEIGHTS), iters=6, progress=False, device="cpu")
    make_flow_labels(fr, fl, lb)
    aggregate_labels([lb], [fr], str(root / "index.json"))
    return root / "index.json"


def tiny(**kw):
    return dict(dict(steps=3, batch_size=2, iters=4, augment={"crop": [64, 96]}, checkpoint_every=2,
                     device="cpu", threads=1, holdout_every=0), **kw)


def curves_agree(a: Path, b: Path) -> None:
    """Same steps and schedule; losses equal within float rounding. The first steps agree to
    6 digits; later ones drift a little more because Adam scales every gradient element to a
    step of about lr, so elements whose gradient is rounding noise move by a full step in a
    random direction (today's one-process loop differs as much between 1 and 2 threads:
    9e-4 relative at step 3 of this run)."""
    ca, cb = read_loss_curve(a), read_loss_curve(b)
    assert list(ca["step"]) == list(cb["step"]) == [1, 2, 3]  # one row per step: only rank 0 writes
    assert np.array_equal(ca["lr"].to_numpy(), cb["lr"].to_numpy())
    for col in ("loss", "epe_to_label"):
        x, y = ca[col].to_numpy(), cb[col].to_numpy()
        np.testing.assert_allclose(x[:2], y[:2], rtol=2e-5)
        np.testing.assert_allclose(x, y, rtol=3e-3)


def test_split_batch_slices_in_order():
    batch = {"x": torch.arange(5), "y": torch.arange(5) * 10}
    parts = split_batch(batch, 2)
    assert [p["x"].tolist() for p in parts] == [[0, 1], [2, 3, 4]]
    assert torch.equal(torch.cat([p["y"] for p in parts]), batch["y"])


def test_thread_slices_train_as_the_whole_batch(training_set, tmp_path):
    one = finetune(tiny(shards=1), training_set, WEIGHTS, tmp_path / "one")
    two = finetune(tiny(shards=2), training_set, WEIGHTS, tmp_path / "two")
    assert one["shards"] == 1 and two["shards"] == 2
    curves_agree(tmp_path / "one" / "loss.tsv", tmp_path / "two" / "loss.tsv")
    # Slices are summed in a fixed order: the threaded path is itself deterministic.
    again = finetune(tiny(shards=2), training_set, WEIGHTS, tmp_path / "again")
    assert again["final_sha256"] == two["final_sha256"]


def test_two_gloo_processes_match_one(training_set, tmp_path, monkeypatch):
    """The finetune rule's script with finetune.processes = 2 (as a 2-GPU job would ask):
    torchrun starts 2 gloo ranks, rank 0 alone writes, the rule log gets their progress."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    finetune(tiny(shards=1), training_set, WEIGHTS, tmp_path / "single")  # the one-process curve
    settings = {k: v for k, v in tiny(processes=2, log_every=1).items() if k != "threads"}
    out = tmp_path / "rule"
    smk = types.SimpleNamespace(
        params=types.SimpleNamespace(settings=settings, workdir=str(out / "state"), sha256=None),
        threads=2, resources={}, log=[str(out / "finetune.log")],
        input=types.SimpleNamespace(train=str(training_set), checkpoint=str(WEIGHTS)),
        output=types.SimpleNamespace(weights=str(out / "trained.pth"), loss=str(out / "loss.tsv")))
    runpy.run_path(str(ROOT / "workflow" / "scripts" / "finetune.py"), init_globals={"snakemake": smk})
    (work,) = (out / "state").glob("work-*")
    summary = json.loads((work / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["config"]["threads"] == 1  # the job's 2 threads shared
    curves_agree(tmp_path / "single" / "loss.tsv", out / "loss.tsv")
    assert load_raft(out / "trained.pth", "small")[1] == summary["final_sha256"]
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["step_000002.pt", "step_000003.pt"]
    log = (out / "finetune.log").read_text()
    assert "torch.distributed.run" in log and "rank 0 motionrefine: fine-tuning step 3/3 loss" in log


def test_a_failing_rank_raises(training_set, tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    kwargs = dict(config=tiny(batch_size=3), training_set=str(training_set), init_checkpoint=str(WEIGHTS),
                  out_dir=str(tmp_path / "bad"))
    with pytest.raises(MotionRefineError, match="failed with exit status"):
        launch.launch("motionrefine.flow.finetune:finetune", kwargs, processes=2, workdir=tmp_path / "bad")
    assert not (tmp_path / "bad" / "loss.tsv").exists()


def test_rank_slices_and_launchers(monkeypatch, tmp_path):
    env = distributed.DistEnv(rank=1, world=2)
    assert distributed.rank_slots(4, env) == range(2, 4)
    with pytest.raises(MotionRefineError, match="not divisible"):
        distributed.rank_slots(3, env)
    assert launch.training_processes(None, 4) == 4 and launch.training_processes(None, 0) == 1
    assert launch.training_processes(2, 0) == 2
    cmd, _ = launch.launch_command(tmp_path / "s.json", 2, gpu=False, env={})
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc_per_node=2" in cmd
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)
    cmd, env = launch.launch_command(tmp_path / "s.json", 4, gpu=True, threads=3,
                                     env={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1", "SLURM_GPUS": "4"})
    assert cmd[0] == "srun" and "--ntasks=4" in cmd and "--gpus-per-task=1" in cmd and "--cpus-per-task=3" in cmd
    assert env["SLURM_JOB_ID"] == "7" and "SLURM_NTASKS" not in env and "SLURM_GPUS" not in env  # the outer step's
    assert env[distributed.SRUN_FLAG] == "1" and env["MASTER_PORT"].isdigit()
    cmd, _ = launch.launch_command(tmp_path / "s.json", 4, gpu=True,
                                   env={"SLURM_JOB_ID": "7", launch.LAUNCHER_ENV: "torchrun"})
    assert "torch.distributed.run" in cmd
    monkeypatch.setattr("os.environ", {distributed.SRUN_FLAG: "1", "SLURM_PROCID": "3", "SLURM_NTASKS": "4",
                                       "SLURM_LOCALID": "3"})
    assert distributed.env_from_environment() == distributed.DistEnv(3, 4, 3)
