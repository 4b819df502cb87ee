"""Multi-process training with PyTorch's DistributedDataParallel, as one process would train.

Each rank takes its contiguous slice of the same global batch (the seed's sample order and
the augmentation draws are keyed by step and global slot, so the samples are the ones a
single process would see), DDP averages the gradients, and every rank steps the same
optimiser and schedule. With a loss that is a mean over samples and equal slices, the
update equals the single-process one up to float rounding. Rank 0 alone writes files.

The processes are started by ``train.launch`` (``torchrun`` or ``srun``); here each one
reads its rank from the environment those launchers set.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.distributed as dist

from motionrefine.core.errors import MotionRefineError

# Set by train.launch for ranks started by srun (torchrun sets RANK/WORLD_SIZE itself); a
# job that merely runs inside a SLURM allocation is one process.
SRUN_FLAG = "MOTIONREFINE_SRUN_DDP"


class DistEnv(NamedTuple):
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_from_environment() -> DistEnv:
    e = os.environ
    if "WORLD_SIZE" in e and "RANK" in e:
        return DistEnv(int(e["RANK"]), int(e["WORLD_SIZE"]), int(e.get("LOCAL_RANK", e["RANK"])))
    if e.get(SRUN_FLAG) == "1" and "SLURM_PROCID" in e:
        return DistEnv(int(e["SLURM_PROCID"]), int(e["SLURM_NTASKS"]), int(e.get("SLURM_LOCALID", e["SLURM_PROCID"])))
    return DistEnv()


def setup(device: torch.device) -> tuple[DistEnv, torch.device]:
    """Join the process group when started as one of several ranks (NCCL on CUDA, gloo on
    the CPU); returns the rank's environment and the device it trains on."""
    env = env_from_environment()
    if not env.active:
        return env, device
    if device.type == "cuda":
        # One GPU per rank: either each rank sees only its own (srun --gpus-per-task) or all.
        index = env.local_rank if torch.cuda.device_count() > 1 else 0
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=env.rank, world_size=env.world)
    return env, device


def teardown(env: DistEnv) -> None:
    if env.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_slots(batch_size: int, env: DistEnv) -> range:
    """The global batch slots this rank trains on."""
    if batch_size % env.world:
        raise MotionRefineError(f"batch_size {batch_size} is not divisible by the {env.world} training processes; "
                                "each must take an equal slice of the global batch")
    per = batch_size // env.world
    return range(env.rank * per, (env.rank + 1) * per)


def all_sum(values: list[float], env: DistEnv, device: torch.device) -> list[float]:
    """Element-wise sum over ranks (the values themselves in one process)."""
    if not env.active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64 if device.type == "cpu" else torch.float32, device=device)
    dist.all_reduce(t)
    return t.tolist()


def wrap(model: torch.nn.Module, env: DistEnv, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when several ranks train, else itself."""
    if not env.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
