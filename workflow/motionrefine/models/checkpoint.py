"""Load and save RAFT checkpoints in the official layout (``module.``-prefixed state_dict).

Refined checkpoints are written in the same layout, so one loader serves both and a
refined model drops into any tool that reads the official files.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from motionrefine.core.errors import AssetMissingError, CheckpointError
from motionrefine.core.store import save_atomic, sha256_file
from motionrefine.models.raft import RAFT

RAFT_RELEASE = "https://github.com/princeton-vl/RAFT (models.zip: raft-small.pth, raft-things.pth, ...)"


def read_torch_file(path: str | os.PathLike, expected_sha256: str | None = None,
                    release: str = RAFT_RELEASE) -> tuple[object, str]:
    """``torch.load`` a checkpoint file after checking it exists and matches the pinned sha256.

    Every failure is one CheckpointError (or AssetMissingError naming ``release``) naming the file."""
    p = Path(path)
    if p.exists() and not p.is_file():
        raise CheckpointError(f"checkpoint {p} is not a file")
    if not p.is_file():
        raise AssetMissingError(
            f"checkpoint not found: {p} (looked for {p.resolve()}); get the official weights from {release}")
    try:
        digest = sha256_file(p)
    except OSError as exc:  # permissions, I/O error: say which file, in one line
        raise CheckpointError(f"checkpoint {p} cannot be read: {exc.strerror or exc}") from exc
    if expected_sha256 and digest.lower() != expected_sha256.lower():
        raise CheckpointError(f"checkpoint {p} has sha256 {digest}, but the config pins {expected_sha256}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True), digest
    except Exception as exc:  # pickle errors, truncated zip, not a torch file
        raise CheckpointError(f"checkpoint {p} cannot be read by torch.load: {exc}") from exc


def read_state_dict(path: str | os.PathLike, expected_sha256: str | None = None) -> tuple[dict, str]:
    """Read a RAFT state_dict, strip a ``module.`` prefix, check the pinned sha256 if given."""
    obj, digest = read_torch_file(path, expected_sha256)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path} is not a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}, digest


def load_state_strict(model: torch.nn.Module, state: dict, source: str) -> None:
    """Strict load with one error listing missing/unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:3])})")
        raise CheckpointError(f"checkpoint {source} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_raft(path: str | os.PathLike, variant: str = "small", expected_sha256: str | None = None,
              alternate_corr_pixels: int | None = None) -> tuple[RAFT, str]:
    """Build RAFT ``variant`` and load ``path`` strictly. Returns (model in eval mode, sha256)."""
    state, digest = read_state_dict(path, expected_sha256)
    model = RAFT(variant, alternate_corr_pixels=alternate_corr_pixels)
    load_state_strict(model, state, str(path))
    model.eval()
    return model, digest


def save_raft(model: RAFT, path: str | os.PathLike) -> str:
    """Write in the official layout (``module.`` prefix), atomically. Returns the sha256."""
    return save_atomic({f"module.{k}": v.detach().cpu() for k, v in model.state_dict().items()}, path)
