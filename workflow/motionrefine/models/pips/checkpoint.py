"""Reading, loading and saving PIPs checkpoints (the released layout or this project's own)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from motionrefine.core.errors import CheckpointError
from motionrefine.core.store import save_atomic
from motionrefine.models.checkpoint import load_state_strict, read_torch_file
from motionrefine.models.pips.model import Pips

PIPS_RELEASE = "https://github.com/aharley/pips (reference_model/model-000200000.pth)"


def read_pips_state(path: str | os.PathLike, expected_sha256: str | None = None) -> tuple[dict, str]:
    """Read a PIPs state_dict from the released layout ({'model_state_dict': ..., 'optimizer_state_dict':
    ...}), a plain state_dict, or one nested under 'state_dict'; strip a 'module.' or 'model.' prefix
    when every key has it. Returns (state, sha256)."""
    obj, digest = read_torch_file(path, expected_sha256, PIPS_RELEASE)
    p = Path(path)
    if isinstance(obj, dict):
        for key in ("model_state_dict", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {p} holds no state_dict of tensors (looked at the top level and "
                              f"under 'model_state_dict' / 'state_dict' / 'model')")
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj, digest


def load_pips(path: str | os.PathLike, size: str = "published", expected_sha256: str | None = None,
              stride: int | None = None, **overrides) -> tuple[Pips, str]:
    """Build PIPs ``size`` and load ``path`` strictly. Returns (model in eval mode, sha256)."""
    state, digest = read_pips_state(path, expected_sha256)
    if stride is not None:
        overrides["stride"] = stride
    model = Pips(size, **overrides)
    load_state_strict(model, state, str(path))
    model.eval()
    return model, digest


def save_pips(model: Pips, path: str | os.PathLike) -> str:
    """Write {'model_state_dict': ...} (the released layout, no optimizer), atomically. Returns sha256."""
    return save_atomic({"model_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, path)
