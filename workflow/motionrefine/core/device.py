"""The device a model stage runs on, and one GPU of its own for each GPU job on a machine.

``pick_device("auto")`` is called by every model stage. Inside a Snakemake job whose rule asked
for GPUs (``resources: gpu >= 1``, read from the job's own ``snakemake`` object) it

1. takes that many free devices, unless a SLURM allocation already chose them: Snakemake counts
   GPU jobs against ``--resources gpu=N`` but never says which device a job gets. A device is
   free when nobody holds its lock file (``claim_devices``: ``fcntl.flock`` on one file per
   device under ``.snakemake/gpu-locks/``, or ``$MOTIONREFINE_GPU_LOCK_DIR``); the lock lasts as
   long as the job's process, whose exit (or crash) releases it. ``CUDA_VISIBLE_DEVICES`` is
   narrowed to the taken devices, so the job and any DDP ranks it starts see only them;
2. stops with one ``GpuUnavailableError`` naming the rule when CUDA is not visible, unless the
   config's ``gpu_fallback`` is ``cpu`` (the CPU demo, tests, CI): then it warns and uses the CPU.

Outside such a job (CPU rules, tests, tools) "auto" is CUDA when visible, else the CPU.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import torch

from motionrefine.core.errors import MotionRefineError

log = logging.getLogger("motionrefine")

# The config key (top level) and its schema default: strict, so a GPU run never crawls on the CPU unnoticed.
FALLBACK_KEY = "gpu_fallback"
FALLBACK_DEFAULT = "error"
LOCK_DIR_ENV = "MOTIONREFINE_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = ".snakemake/gpu-locks"
_CVD = "CUDA_VISIBLE_DEVICES"


class GpuUnavailableError(MotionRefineError):
    """A job that asked for GPUs cannot have them (no CUDA, or fewer devices than it asked for)."""


@dataclass(frozen=True)
class GpuJob:
    """What pick_device needs to know of the Snakemake job it runs in."""

    rule: str
    gpus: int
    fallback: str = FALLBACK_DEFAULT
    wildcards: str = ""

    def describe(self) -> str:
        return f"rule {self.rule}" + (f" ({self.wildcards})" if self.wildcards else "")


def job_from_snakemake(sm) -> GpuJob:
    """A GpuJob from a script job's ``snakemake`` object (its rule, resources and config)."""
    gpus = int(sm.resources.get("gpu", 0) or 0)
    fallback = (sm.config or {}).get(FALLBACK_KEY, FALLBACK_DEFAULT)
    wildcards = ", ".join(f"{k}={v}" for k, v in sm.wildcards.items()) if sm.wildcards else ""
    return GpuJob(rule=str(sm.rule), gpus=gpus, fallback=fallback, wildcards=wildcards)


def current_job() -> GpuJob | None:
    """This process's Snakemake job, or None outside one. A ``script:`` job's preamble defines
    ``snakemake`` in ``__main__``; looking it up here keeps every script and stage unchanged."""
    sm = getattr(sys.modules.get("__main__"), "snakemake", None)
    if sm is None or not all(hasattr(sm, a) for a in ("rule", "resources", "config", "wildcards")):
        return None
    return job_from_snakemake(sm)


# --- device locks -------------------------------------------------------------------------


@dataclass
class DeviceClaim:
    """Devices held by this process: their ``CUDA_VISIBLE_DEVICES`` entries and positions among
    the visible ones. Held until ``release()`` or the process's exit."""

    devices: list[str]
    indices: list[int]
    files: list[IO] = field(default_factory=list, repr=False)

    def release(self) -> None:
        for f in self.files:
            f.close()  # closing the file drops its flock
        self.files = []


def _lock_name(device: str) -> str:
    # Entries may be indices, GPU-/MIG- UUIDs: keep them readable but filesystem-safe.
    return "gpu-" + re.sub(r"[^A-Za-z0-9._-]", "_", device) + ".lock"


def _try_lock(path: Path) -> IO | None:
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def claim_devices(count: int, devices: list[str], lock_dir: str | os.PathLike, holder: str = "",
                  timeout: float | None = None, poll: float = 0.5) -> DeviceClaim:
    """Take the first ``count`` free ``devices`` (CUDA_VISIBLE_DEVICES entries), waiting while
    fewer are free. No deadlock between jobs: a partial set is let go before waiting again.
    ``timeout`` (s, None = wait as long as it takes) raises GpuUnavailableError."""
    if count > len(devices):
        raise GpuUnavailableError(f"{holder or 'this job'} asked for {count} GPU(s) but {len(devices)} "
                                  f"are visible ({_CVD}={_cvd_text()})")
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    waiting = False
    while True:
        held: list[tuple[int, IO]] = []
        for i, dev in enumerate(devices):
            f = _try_lock(lock_dir / _lock_name(dev))
            if f is not None:
                held.append((i, f))
                if len(held) == count:
                    break
        if len(held) == count:
            for _, f in held:  # who holds it, for whoever looks at the folder
                f.seek(0)
                f.truncate()
                f.write(f"pid {os.getpid()} {holder}\n")
                f.flush()
            return DeviceClaim([devices[i] for i, _ in held], [i for i, _ in held], [f for _, f in held])
        for _, f in held:
            f.close()
        if deadline is not None and time.monotonic() >= deadline:
            raise GpuUnavailableError(f"{holder or 'this job'}: no {count} of the GPUs {devices} came free "
                                      f"within {timeout:g} s (locks in {lock_dir})")
        if not waiting:
            log.info("%s: waiting for %d free GPU(s) of %s (locks in %s)", holder or "job", count, devices, lock_dir)
            waiting = True
        time.sleep(poll)


def visible_devices() -> list[str]:
    """The CUDA_VISIBLE_DEVICES entries of the devices this process sees (indices when unset).
    torch counts them through NVML where it can, without starting CUDA, so a narrowed
    CUDA_VISIBLE_DEVICES still takes effect in this process."""
    count = torch.cuda.device_count()
    env = os.environ.get(_CVD)
    if env is None:
        return [str(i) for i in range(count)]
    return [d.strip() for d in env.split(",") if d.strip()][:count]


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR).resolve()


# --- the device of this process --------------------------------------------------------------

# This process's job device and claim: decided once, then every stage of the job gets the same.
_job_device: torch.device | None = None
_claim: DeviceClaim | None = None


def _cvd_text() -> str:
    value = os.environ.get(_CVD)
    return "unset" if value is None else repr(value)


def _torch_build() -> str:
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    return f"torch {torch.__version__} is built for CUDA {torch.version.cuda}"


def _claim_job_gpus(job: GpuJob, timeout: float | None = None) -> int | None:
    """Take the job's devices and narrow CUDA_VISIBLE_DEVICES to them. Returns the device index
    to select in this process when CUDA had already started here (the narrowing then only
    reaches child processes), else None."""
    global _claim
    devices = visible_devices()
    if not devices:
        return None  # no CUDA: the caller's check says so
    _claim = claim_devices(job.gpus, devices, lock_dir(), holder=job.describe(), timeout=timeout)
    started = torch.cuda.is_initialized()
    os.environ[_CVD] = ",".join(_claim.devices)
    # CUDA reads the variable once, when it starts. Started already (or counted without NVML,
    # which starts it): the count stays the old one, the narrowing reaches only child processes,
    # and this process selects its device by index instead.
    started = started or torch.cuda.device_count() != len(_claim.devices)
    log.info("%s: GPU %s (%s=%s)", job.describe(), ",".join(_claim.devices), _CVD, os.environ[_CVD])
    return _claim.indices[0] if started else None


def gpu_job_device(job: GpuJob, timeout: float | None = None) -> torch.device:
    """The device of a job that asked for ``job.gpus`` GPUs (see the module docstring)."""
    global _job_device
    if _job_device is not None:
        return _job_device
    before = _cvd_text()
    # A SLURM job's allocation already gave it its own devices (narrowed to index 0, 1, ...):
    # locks there would make jobs on different GPUs wait for each other's "device 0".
    index = None if os.environ.get("SLURM_JOB_ID") else _claim_job_gpus(job, timeout)
    if torch.cuda.is_available():
        if index is not None:
            torch.cuda.set_device(index)
            _job_device = torch.device("cuda", index)
        else:
            _job_device = torch.device("cuda")
        return _job_device
    what = (f"{job.describe()} asked for {job.gpus} GPU(s) (resources gpu={job.gpus}), but CUDA is not "
            f"visible to this process ({_CVD}={before}; {_torch_build()})")
    if job.fallback != "cpu":
        raise GpuUnavailableError(f"{what}. Run it where CUDA is visible, or set `{FALLBACK_KEY}: cpu` in the "
                                  f"config (--config {FALLBACK_KEY}=cpu) to run GPU rules on the CPU.")
    log.warning("%s; running on the CPU (%s: cpu)", what, FALLBACK_KEY)
    if _claim is not None:  # a device CUDA cannot use is no use to this job: let others try it
        _claim.release()
    _job_device = torch.device("cpu")
    return _job_device


def release_job_device() -> None:
    """Forget this process's job device and let go of its GPUs (the process's exit does the same)."""
    global _job_device, _claim
    if _claim is not None:
        _claim.release()
    _job_device = _claim = None


def claim_job_gpus() -> torch.device | None:
    """In a GPU job: take and check its devices now (a job that starts DDP ranks calls this
    first, so the ranks inherit CUDA_VISIBLE_DEVICES). Elsewhere: nothing, None."""
    job = current_job()
    return gpu_job_device(job) if job is not None and job.gpus > 0 else None


_CURRENT = object()


def pick_device(requested: str = "auto", threads: int | None = None, job=_CURRENT) -> torch.device:
    """'cpu' → the CPU; 'auto' (or 'cuda') → the job's GPU in a GPU job (module docstring), else
    CUDA when visible, else the CPU with a warning. Also sets torch's CPU threads. ``job``: the
    GpuJob to decide for (default: this process's Snakemake job, if any)."""
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    if requested == "cpu":
        return torch.device("cpu")
    job = current_job() if job is _CURRENT else job
    if job is not None and job.gpus > 0:
        return gpu_job_device(job)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested not in ("auto", "cpu"):
        log.warning("device %r requested but CUDA is not visible to this process; running on the CPU", requested)
    else:
        log.warning("CUDA is not visible to this process; running on the CPU")
    return torch.device("cpu")
