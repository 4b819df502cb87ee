"""Benchmark folder layout: required folders, the training root, scene selection."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from motionrefine.core.errors import AssetMissingError, MotionRefineError


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise AssetMissingError(f"{what} folder not found: {path}")
    return path


def training_root(root) -> Path:
    """Accept either the benchmark root (holding ``training/``) or ``training/`` itself."""
    r = Path(root)
    if (r / "training").is_dir():
        return r / "training"
    if not r.is_dir():
        raise AssetMissingError(f"benchmark folder not found: {r}")
    return r


def select_scenes(available: Sequence[str], wanted: Iterable[str] | None, where) -> list[str]:
    if wanted is None:
        return list(available)
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)  # a bare name is one scene, not letters
    missing = [s for s in wanted if s not in available]
    if missing:
        raise MotionRefineError(f"{where}: scene(s) not found: {missing}")
    return wanted
