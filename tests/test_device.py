"""GPU jobs: the device each one takes (locks), the one error without CUDA, and the opt-out.

There is no GPU here: CUDA is mocked (torch.cuda.is_available / device_count / is_initialized /
set_device), in this process and in forked children."""
from __future__ import annotations

import multiprocessing as mp
import os
import queue as queues
import sys
import time
import types
from pathlib import Path

import pytest
import torch
import yaml

from motionrefine.config.schema import load_config_file, validate_config
from motionrefine.core import device
from motionrefine.core.device import GpuJob, GpuUnavailableError, claim_devices, pick_device

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
FLOW_JOB = GpuJob(rule="flow", gpus=1, fallback="error", wildcards="model=raft-small, video=tree")


@pytest.fixture(autouse=True)
def fresh_device(monkeypatch, tmp_path):
    """Each test starts without a job device, with its own lock folder and no CUDA_VISIBLE_DEVICES
    or SLURM job of the caller's."""
    device.release_job_device()
    monkeypatch.setenv(device.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    yield
    device.release_job_device()


def mock_cuda(monkeypatch, count: int, initialized: bool = False) -> list[int]:
    """``count`` visible CUDA devices (0: none); returns the list torch.cuda.set_device calls land in."""
    selected: list[int] = []

    def device_count():  # as torch counts through NVML: CUDA_VISIBLE_DEVICES narrows it until CUDA starts
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        return count if env is None or initialized else min(count, len([d for d in env.split(",") if d]))

    monkeypatch.setattr(torch.cuda, "device_count", device_count)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialized)
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)
    return selected


# --- no CUDA: one error, or the opt-out -----------------------------------------------------


def test_strict_gpu_job_without_cuda_fails_with_one_message(monkeypatch):
    mock_cuda(monkeypatch, 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # e.g. a scheduler's fake or broken GPU
    with pytest.raises(GpuUnavailableError) as err:
        pick_device("auto", job=FLOW_JOB)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("rule flow (model=raft-small, video=tree) asked for 1 GPU(s) (resources gpu=1)")
    assert "CUDA_VISIBLE_DEVICES='0'" in msg
    assert "`gpu_fallback: cpu`" in msg and "--config gpu_fallback=cpu" in msg
    # A CPU torch says so: the usual cause on a GPU machine.
    if torch.version.cuda is None:
        assert "CPU-only build" in msg


def test_strict_error_says_when_cuda_visible_devices_is_unset(monkeypatch):
    mock_cuda(monkeypatch, 0)
    with pytest.raises(GpuUnavailableError, match=r"CUDA_VISIBLE_DEVICES=unset"):
        pick_device("auto", job=FLOW_JOB)


def test_opt_out_runs_a_gpu_job_on_the_cpu_with_a_warning(monkeypatch, caplog):
    mock_cuda(monkeypatch, 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    job = GpuJob(rule="flow", gpus=1, fallback="cpu", wildcards="video=tree")
    with caplog.at_level("WARNING", logger="motionrefine"):
        assert pick_device("auto", job=job) == torch.device("cpu")
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    # tests/test_slurm.py looks for "running on the CPU" in the flow logs of its fake-GPU jobs.
    assert "rule flow (video=tree) asked for 1 GPU(s)" in warning and "running on the CPU" in warning
    assert "gpu_fallback: cpu" in warning


def test_cpu_jobs_and_explicit_cpu_never_fail(monkeypatch, caplog):
    mock_cuda(monkeypatch, 0)
    # An explicit CPU request inside a strict GPU job is a choice, not a missing GPU.
    assert pick_device("cpu", job=FLOW_JOB) == torch.device("cpu")
    # A rule without a GPU, or no Snakemake job at all (tests, tools): warn and use the CPU.
    for job in (GpuJob(rule="frames", gpus=0), None):
        caplog.clear()
        with caplog.at_level("WARNING", logger="motionrefine"):
            assert pick_device("auto", job=job) == torch.device("cpu")
        assert "running on the CPU" in caplog.text


def test_the_job_comes_from_the_scripts_snakemake_object(monkeypatch):
    """A script job's preamble defines `snakemake` in __main__; pick_device finds its rule,
    gpu resource and config there, with no argument from the stage that calls it."""
    mock_cuda(monkeypatch, 0)
    fake = types.SimpleNamespace(rule="guard", resources={"gpu": 1, "mem_mb": 4000}, config={"gpu_fallback": "error"},
                                 wildcards={"run": "heldout"})
    monkeypatch.setattr(sys.modules["__main__"], "snakemake", fake, raising=False)
    assert device.current_job() == GpuJob(rule="guard", gpus=1, fallback="error", wildcards="run=heldout")
    with pytest.raises(GpuUnavailableError, match=r"^rule guard \(run=heldout\) asked for 1 GPU"):
        pick_device("auto")
    # gpu dropped (a CPU rule: res() gives None) and the opt-out: no error.
    fake.resources, fake.config = {"mem_mb": 4000}, {"gpu_fallback": "cpu"}
    assert device.current_job().gpus == 0
    assert pick_device("auto") == torch.device("cpu")


def test_schema_default_is_strict_and_the_cpu_configs_opt_out():
    assert yaml.safe_load(SCHEMA.read_text())["properties"]["gpu_fallback"]["default"] == "error"
    for path in ("config.yaml", "tests/data/tiny/config.yaml", "tests/data/tiny_tracking/config.yaml"):
        assert yaml.safe_load((ROOT / path).read_text())["gpu_fallback"] == "cpu", path
    with pytest.raises(Exception, match="gpu_fallback"):
        validate_config({**load_config_file(ROOT / "config.yaml", SCHEMA), "gpu_fallback": "maybe"}, SCHEMA)


# --- which device a GPU job takes -----------------------------------------------------------


def test_a_gpu_job_takes_the_first_free_device_and_narrows_cuda_visible_devices(monkeypatch, tmp_path):
    selected = mock_cuda(monkeypatch, 2)
    other = claim_devices(1, ["0", "1"], tmp_path / "locks", holder="another job")
    assert other.devices == ["0"]
    assert pick_device("auto", job=FLOW_JOB) == torch.device("cuda")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert selected == []  # CUDA not started yet: the narrowed variable is enough
    assert "flow" in (tmp_path / "locks/gpu-1.lock").read_text()
    # Every later stage of the job gets the same device without another claim.
    assert pick_device("auto", job=FLOW_JOB) == torch.device("cuda")
    other.release()


def test_cuda_already_started_selects_the_device_by_index(monkeypatch, tmp_path):
    selected = mock_cuda(monkeypatch, 3, initialized=True)
    held = claim_devices(2, ["0", "1", "2"], tmp_path / "locks")
    assert pick_device("auto", job=FLOW_JOB) == torch.device("cuda", 2)
    assert selected == [2]
    held.release()


def test_a_count_that_started_cuda_selects_the_device_by_index(monkeypatch, tmp_path):
    """Without NVML torch counts by starting CUDA, which then ignores the narrowed variable."""
    selected = mock_cuda(monkeypatch, 2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    held = claim_devices(1, ["0", "1"], tmp_path / "locks")
    assert pick_device("auto", job=FLOW_JOB) == torch.device("cuda", 1)
    assert selected == [1] and os.environ["CUDA_VISIBLE_DEVICES"] == "1"  # still narrowed for child processes
    held.release()


def test_claims_follow_an_existing_cuda_visible_devices(monkeypatch, tmp_path):
    mock_cuda(monkeypatch, 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    held = claim_devices(1, ["3"], tmp_path / "locks")  # physical device 3, taken by another run
    pick_device("auto", job=FLOW_JOB)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    assert (tmp_path / "locks/gpu-5.lock").exists()
    held.release()


def test_a_multi_gpu_job_takes_as_many_devices(monkeypatch):
    mock_cuda(monkeypatch, 4)
    pick_device("auto", job=GpuJob(rule="finetune", gpus=3))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2"
    device.release_job_device()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with pytest.raises(GpuUnavailableError, match=r"rule finetune asked for 5 GPU\(s\) but 4 are visible"):
        pick_device("auto", job=GpuJob(rule="finetune", gpus=5))


def test_no_locks_inside_a_slurm_job(monkeypatch, tmp_path):
    """SLURM already gave the job its devices (renumbered from 0): locks would make jobs on
    different GPUs of one node queue for each other's "device 0"."""
    mock_cuda(monkeypatch, 1)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    held = claim_devices(1, ["0"], tmp_path / "locks")
    assert pick_device("auto", job=FLOW_JOB) == torch.device("cuda")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    held.release()


def test_a_released_device_is_taken_again_and_a_busy_one_times_out(tmp_path):
    locks, devices = tmp_path / "locks", ["0", "1"]
    a = claim_devices(1, devices, locks)
    b = claim_devices(1, devices, locks)
    assert (a.devices, b.devices) == (["0"], ["1"])
    with pytest.raises(GpuUnavailableError, match="came free within"):
        claim_devices(1, devices, locks, timeout=0.2, poll=0.05)
    a.release()
    assert claim_devices(1, devices, locks).devices == ["0"]


def _hold_job_device(queue, barrier):
    """A child: its job's device (torch mocked in the parent before the fork), then wait until
    every child holds one."""
    dev = pick_device("auto", job=GpuJob(rule="flow", gpus=1))
    queue.put((os.getpid(), os.environ["CUDA_VISIBLE_DEVICES"], str(dev)))
    barrier.wait(timeout=30)


def _hold_until(queue, release, devices, locks):
    claim = claim_devices(1, devices, locks, poll=0.05)
    queue.put((os.getpid(), claim.devices[0], time.monotonic()))
    release.wait(timeout=30)


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_concurrent_processes_get_distinct_devices_and_reuse_released_ones(monkeypatch):
    n = 3
    mock_cuda(monkeypatch, n)
    ctx = mp.get_context("fork")  # the children inherit the mocked torch.cuda
    queue, barrier = ctx.Queue(), ctx.Barrier(n)
    procs = [ctx.Process(target=_hold_job_device, args=(queue, barrier)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=30) for _ in range(n)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    # All held theirs at once (the barrier), each a different device.
    assert sorted(cvd for _, cvd, _ in got) == ["0", "1", "2"]
    assert {d for *_, d in got} == {"cuda"}
    # Their exit released the devices: the next job takes the first one again.
    assert pick_device("auto", job=GpuJob(rule="flow", gpus=1)) == torch.device("cuda")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_job_waits_for_a_device_until_its_holder_exits(tmp_path):
    ctx = mp.get_context("fork")
    queue, release = ctx.Queue(), ctx.Event()
    locks = tmp_path / "locks"
    first = ctx.Process(target=_hold_until, args=(queue, release, ["0"], locks))
    first.start()
    assert queue.get(timeout=30)[1] == "0"
    second = ctx.Process(target=_hold_until, args=(queue, ctx.Event(), ["0"], locks))
    second.start()
    with pytest.raises(queues.Empty):  # the only device is held
        queue.get(timeout=1.0)
    released_at = time.monotonic()
    release.set()
    pid, dev, taken_at = queue.get(timeout=30)
    assert (pid, dev) == (second.pid, "0") and taken_at >= released_at
    first.join(timeout=30)
    second.kill()
    second.join(timeout=30)
