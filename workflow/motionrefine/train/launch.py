"""Start a training as several DDP processes: ``torchrun`` on one machine, ``srun`` inside a
SLURM job (``SLURM_JOB_ID`` set; ``MOTIONREFINE_LAUNCHER=torchrun|srun`` forces one), each
process calling the same entry point.

    launch("motionrefine.flow.finetune:finetune", kwargs, processes=4, workdir=work)

The entry's keyword arguments travel as JSON in ``workdir``; every rank runs
``python -m motionrefine.train.launch SPEC`` and finds its rank in the environment
(``train.distributed``). Only rank 0 writes results, so the caller reads them from the
work folder afterwards.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import motionrefine
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import write_text_atomic
from motionrefine.train.distributed import SRUN_FLAG

log = logging.getLogger("motionrefine")

# auto (default): srun inside a SLURM job, else torchrun; or force one of them.
LAUNCHER_ENV = "MOTIONREFINE_LAUNCHER"


def training_processes(setting: int | None, gpus: int) -> int:
    """How many ranks a training job runs: the explicit setting, else one per GPU the job holds."""
    if setting is not None:
        if int(setting) < 1:
            raise MotionRefineError(f"processes must be >= 1, got {setting}")
        return int(setting)
    return max(1, int(gpus))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# SLURM variables a nested srun may keep: the job's identity. The rest describe the job step
# this process runs in (one task, all CPUs and GPUs) and would override the new step's flags.
_SLURM_KEEP = {"SLURM_JOB_ID", "SLURM_JOBID", "SLURM_CLUSTER_NAME", "SLURM_SUBMIT_DIR", "SLURM_SUBMIT_HOST",
               "SLURM_CONF"}


def launch_command(spec: Path, processes: int, gpu: bool, env: dict | None = None,
                   threads: int = 1) -> tuple[list[str], dict]:
    """The command and environment that start ``processes`` ranks of ``spec``'s entry
    (``threads`` CPUs each)."""
    env = dict(os.environ if env is None else env)
    # The ranks import the same motionrefine as this process (an editable checkout first).
    pkg_root = str(Path(motionrefine.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, *filter(None, [env.get("PYTHONPATH")])])
    worker = [sys.executable, "-m", "motionrefine.train.launch", str(spec)]
    choice = env.get(LAUNCHER_ENV, "auto")
    if choice not in ("auto", "srun", "torchrun"):
        raise MotionRefineError(f"{LAUNCHER_ENV}={choice!r}: expected auto, srun or torchrun")
    if choice == "srun" or (choice == "auto" and env.get("SLURM_JOB_ID") and shutil.which("srun")):
        # One node: rank 0's host is this one. --overlap: the job step this runs in (Snakemake's
        # `srun -n1`) already holds the job's CPUs and GPUs; the ranks share them.
        env = {k: v for k, v in env.items()
               if not ((k.startswith("SLURM_") and k not in _SLURM_KEEP) or k.startswith(("SRUN_", "SBATCH_")))}
        env.update({SRUN_FLAG: "1", "MASTER_ADDR": socket.gethostname(), "MASTER_PORT": str(_free_port())})
        cmd = ["srun", "--overlap", f"--ntasks={processes}", "--nodes=1", f"--cpus-per-task={threads}",
               "--kill-on-bad-exit=1"]
        if gpu:
            cmd.append("--gpus-per-task=1")
        return cmd + worker, env
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           *worker[1:]]
    return cmd, env


def launch(entry: str, kwargs: dict, processes: int, workdir: str | os.PathLike, gpu: bool = False,
           threads: int = 1) -> None:
    """Run ``entry`` ("module:function") in ``processes`` ranks and wait for them; a failed
    rank raises naming the launcher's exit status."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spec = workdir / "launch.json"
    write_text_atomic(spec, json.dumps({"entry": entry, "kwargs": kwargs}, default=str))
    cmd, env = launch_command(spec, processes, gpu, threads=threads)
    log.info("starting %d training processes: %s", processes, " ".join(cmd))
    # The ranks' output is relayed line by line through this process's logging, so it lands
    # in the rule's log with the rest.
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        for line in proc.stdout:
            log.info("| %s", line.rstrip())
    if proc.returncode != 0:
        raise MotionRefineError(f"distributed training ({processes} processes) failed with exit status "
                                f"{proc.returncode}; see the ranks' messages above")


def _run_spec(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    module, func = spec["entry"].split(":")
    fn = getattr(importlib.import_module(module), func)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s rank " +
                        os.environ.get("RANK", os.environ.get("SLURM_PROCID", "?")) + " %(name)s: %(message)s")
    fn(**spec["kwargs"])


if __name__ == "__main__":
    _run_spec(sys.argv[1])
