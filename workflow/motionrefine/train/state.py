"""Training state: seeding, RNG states, and checkpoints (save with rotation, resume with a
check that the checkpoint was written by the same run)."""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import numpy as np
import torch

from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import write_atomic

log = logging.getLogger("motionrefine")

# Config fields that may change between a run and its resumption without changing the result;
# each trainer adds its own.
RUNTIME_FIELDS = frozenset({"checkpoint_every", "keep_checkpoints", "device", "threads"})

_CKPT = re.compile(r"^step_(\d{6,})\.pt$")


def result_config(config: dict, runtime_fields) -> dict:
    """The config without the fields that do not change the result (what a resume must match)."""
    return {k: v for k, v in config.items() if k not in runtime_fields}


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_states() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_states(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _CKPT.match(p.name))]
    return sorted(found)


def save_checkpoint(ckpt_dir: Path, step: int, model, optimizer, scheduler, meta: dict, keep: int) -> Path:
    """Model, optimiser, scheduler and RNG states after ``step`` steps, plus ``meta``; only the
    newest ``keep`` checkpoints are kept."""
    path = ckpt_dir / f"step_{step:06d}.pt"
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": rng_states(), **meta}
    write_atomic(path, lambda tmp: torch.save(state, tmp))
    for _, old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def resume(ckpt_dir: Path, identity: dict, model, optimizer, scheduler, device) -> int:
    """Load the latest checkpoint of ``ckpt_dir`` if any, after checking that every key of
    ``identity`` matches what it was written with; returns the step to continue from."""
    found = list_checkpoints(ckpt_dir)
    if not found:
        return 0
    _, path = found[-1]
    state = torch.load(path, map_location=device, weights_only=False)
    for key in identity:
        if state.get(key) != identity[key]:
            raise MotionRefineError(
                f"{path} was written by a different run ({key} differs); remove {ckpt_dir} to start over")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_states(state["rng"])
    log.info("resuming %s from step %d (%s)", ckpt_dir.parent, int(state["step"]), path.name)
    return int(state["step"])
