"""Device choice with a logged CPU fallback (GPU rules may land where CUDA is not visible)."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("motionrefine")


def pick_device(requested: str = "auto", threads: int | None = None) -> torch.device:
    """'auto' → CUDA when visible, else CPU with a warning; also sets torch's CPU threads."""
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested not in ("auto", "cpu"):
        log.warning("device %r requested but CUDA is not visible to this process; running on the CPU", requested)
    else:
        log.warning("CUDA is not visible to this process; running on the CPU")
    return torch.device("cpu")
