"""GPU jobs: the device each one takes (locks), the one error without CUDA, the opt-out, and the
GPU settings (config/gpu.yaml, profiles/workstation, envs/motionrefine-cuda.yaml).

There is no GPU here: CUDA is mocked (torch.cuda.is_available / device_count / is_initialized /
set_device), in this process, in forked children and inside real Snakemake jobs."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue as queues
import re
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest
import torch
import yaml

import motionrefine
from motionrefine.config import plan
from motionrefine.config.schema import load_config_file, validate_config
from motionrefine.core import device
from motionrefine.core.device import GpuJob, GpuUnavailableError, claim_devices, pick_device

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
WORKSTATION = ROOT / "profiles/workstation"
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


# --- Snakemake: the workstation profile ------------------------------------------------------


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env.pop(device.LOCK_DIR_ENV, None)
    pkg = str(Path(motionrefine.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg, env.get("PYTHONPATH")]))
    return env


def test_workstation_dry_run_plans_the_gpu_config(tmp_path):
    proc = subprocess.run([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--profile", str(WORKSTATION),
                           "--configfile", str(ROOT / "config/gpu.yaml"), "--dry-run", "--directory", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    jobs, rule = [], None
    for line in out.splitlines():  # rule -> its jobs' `resources:` lines
        if m := re.match(r"\s*(?:local)?rule (\w+):", line):
            rule = m.group(1)
        elif (m := re.match(r"\s*resources: (.*)", line)) and rule:
            jobs.append((rule, m.group(1)))
            rule = None
    gpu = {rule: res for rule, res in jobs if "gpu=" in res}
    assert {"delivered_flow", "labels", "finetune", "guard", "evaluate"} <= set(gpu), out
    assert all("gpu=1" in res for res in gpu.values())
    assert "gpu=" not in dict(jobs)["frames"]
    # config/gpu.yaml's resources reach the plan (finetune: 32 GB, not config.yaml's 8).
    assert "mem_mb=32000" in gpu["finetune"], gpu["finetune"]


def test_workstation_profile_settings():
    prof = yaml.safe_load((WORKSTATION / "config.yaml").read_text())
    assert prof["resources"] == {"gpu": 1}  # one GPU job at a time unless the user says how many GPUs
    assert prof["config"] == {"gpu_fallback": "error"}
    assert "executor" not in prof  # jobs run on this machine


JOB_SCRIPT = '''
import json, os, time
from pathlib import Path

import torch

from motionrefine.config.schema import job_log
from motionrefine.core.device import pick_device

name = snakemake.wildcards.name
# A machine with 2 CUDA devices, CUDA not started yet (counted as NVML does); "nocuda" jobs find none.
cvd = lambda: os.environ.get("CUDA_VISIBLE_DEVICES")
torch.cuda.device_count = lambda: 0 if name == "nocuda" else 2 if cvd() is None else len(cvd().split(","))
torch.cuda.is_available = lambda: name != "nocuda"
torch.cuda.is_initialized = lambda: False
with job_log(snakemake.log[0]):
    start = time.time()
    dev = pick_device("auto")
    if name.startswith("pair"):  # wait (bounded) for the other pair job: both must run at once
        Path("started", name).parent.mkdir(exist_ok=True)
        Path("started", name).touch()
        deadline = time.time() + 20
        while len(list(Path("started").iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.05)
    else:
        time.sleep(1.0)
    Path(snakemake.output[0]).write_text(json.dumps({
        "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "device": str(dev), "start": start, "end": time.time(),
        "together": len(list(Path("started").iterdir())) if Path("started").is_dir() else 0,
        "fallback": snakemake.config.get("gpu_fallback")}))
'''


def test_workstation_profile_limits_and_assigns_gpus_in_real_jobs(tmp_path):
    """Through Snakemake itself: the profile's gpu=1 keeps GPU jobs apart even with free cores,
    each takes the device the previous one released, the profile's strict policy reaches the
    jobs and a job without CUDA fails with the one message; with gpu=2, two jobs run together
    on different devices."""
    (tmp_path / "job.py").write_text(JOB_SCRIPT)
    (tmp_path / "Snakefile").write_text(textwrap.dedent('''
        rule gpu_job:
            output: "done/{name}.json"
            log: "logs/{name}.log"
            resources: gpu=1
            script: "job.py"
    '''))
    base = [SNAKEMAKE, "-s", str(tmp_path / "Snakefile"), "--profile", str(WORKSTATION), "--directory",
            str(tmp_path)]
    # 3 cores: without the GPU limit all three jobs would start at once.
    run = subprocess.run(base + ["--cores", "3", "done/a.json", "done/b.json", "done/nocuda.json"],
                         capture_output=True, text=True, timeout=300, env=_env())
    out = run.stdout + run.stderr
    assert run.returncode != 0, out  # the nocuda job failed; keep-going let the others finish
    a, b = (json.loads((tmp_path / f"done/{n}.json").read_text()) for n in ("a", "b"))
    assert a["end"] <= b["start"] or b["end"] <= a["start"], (a, b)  # never at once
    assert a["cvd"] == b["cvd"] == "0" and a["device"] == "cuda"
    assert a["fallback"] == "error"
    log = (tmp_path / "logs/nocuda.log").read_text()
    assert "rule gpu_job (name=nocuda) asked for 1 GPU(s) (resources gpu=1), but CUDA is not visible" in log
    assert "Traceback" not in log and len(log.strip().splitlines()) == 1, log
    assert (tmp_path / ".snakemake/gpu-locks/gpu-0.lock").exists()

    run = subprocess.run(base + ["--cores", "2", "done/pair1.json", "done/pair2.json", "--resources", "gpu=2"], capture_output=True,
                         text=True, timeout=300, env=_env())
    assert run.returncode == 0, run.stdout + run.stderr
    p1, p2 = (json.loads((tmp_path / f"done/pair{i}.json").read_text()) for i in (1, 2))
    assert p1["together"] == p2["together"] == 2
    assert {p1["cvd"], p2["cvd"]} == {"0", "1"}


# --- the GPU overlay and the CUDA env --------------------------------------------------------


def test_gpu_overlay_validates_and_sizes_the_run_for_a_gpu():
    from snakemake.utils import update_config

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    overlay = yaml.safe_load((ROOT / "config/gpu.yaml").read_text())
    update_config(config, overlay)  # what --configfile does over config.yaml
    validate_config(config, SCHEMA)
    assert config["gpu_fallback"] == "error"
    assert plan.finetune_settings(config)["steps"] == 1000 and plan.finetune_settings(config)["batch_size"] == 12
    teacher = config["teacher"]
    assert (teacher["max_megapixels"], teacher["max_pairs"]) == (0, 0)
    assert teacher["max_pixels"] > 1_000_000
    for rule, res in overlay["resources"].items():
        assert config["resources"][rule]["gpu"] == 1, rule
        assert res["threads"] >= 4


def _pins(env: dict) -> tuple[dict, list]:
    pins, options = {}, []
    for dep in env["dependencies"]:
        for item in dep["pip"] if isinstance(dep, dict) else [dep]:
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)(==|=)([^=\s]+)", item)
            if m:
                pins[m.group(1).lower()] = m.group(3)
            elif item.startswith("--"):
                options.append(item)
    return pins, options


def test_cuda_env_pins_requirements_and_takes_torch_from_a_cuda_index():
    reqs = dict(line.split("#")[0].strip().lower().split("==") for line in
                (ROOT / "requirements.txt").read_text().splitlines() if line.split("#")[0].strip())
    cpu_pins, cpu_opts = _pins(yaml.safe_load((ROOT / "envs/motionrefine.yaml").read_text()))
    cuda_env = yaml.safe_load((ROOT / "envs/motionrefine-cuda.yaml").read_text())
    cuda_pins, cuda_opts = _pins(cuda_env)
    assert cuda_pins.pop("python") == cpu_pins.pop("python")
    assert cuda_pins == reqs  # the whole stack, Snakemake included: the workflow runs from this env
    assert {k: v for k, v in cuda_pins.items() if not k.startswith("snakemake")} == cpu_pins
    assert cpu_opts == ["--extra-index-url https://download.pytorch.org/whl/cpu"]
    assert len(cuda_opts) == 1 and re.fullmatch(r"--extra-index-url https://download\.pytorch\.org/whl/cu\d+",
                                                cuda_opts[0])
    assert cuda_env["dependencies"][-1]["pip"][-1] == "-e ${MOTIONREFINE_ROOT}"
