"""Re-balancing pseudo-labels by speed, so training is not dominated by easy, slow motion.

Flow: per-pixel loss weights that give every speed bin the same total weight within a
sample (off by default; the official flow code has no re-balancing).
Tracks: the speed filter the official Horse10 recipe uses, and a per-bin share cap
(a variant of the earlier speed-binned selection the official code keeps unused).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from motionrefine.flow.cycle import DEFAULT_SPEED_EDGES, check_speed_edges, speed_bin_index
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.geometry import flow_magnitude


def speed_bin_weights(flow, keep, edges: Sequence[float] = DEFAULT_SPEED_EDGES):
    """Per-pixel weights equalising speed bins, per sample.

    flow: (B, 2, H, W) torch or (H, W, 2) numpy; keep: (B, H, W) / (H, W) bool.
    A kept pixel in bin k gets weight n_kept / (K' · count_k), where K' is the number of
    non-empty bins: each bin then carries the same total weight and the mean weight over
    kept pixels is exactly 1. Pixels not kept (or outside every bin) get 0.
    """
    if isinstance(flow, np.ndarray):
        w = speed_bin_weights(torch.from_numpy(np.moveaxis(flow, -1, 0)[None].copy()),
                              torch.from_numpy(np.asarray(keep)[None]), edges)
        return w[0].numpy()
    b = flow.shape[0]
    n_bins = len(check_speed_edges(edges)) - 1
    bins = speed_bin_index(flow_magnitude(flow.float()), edges)
    bins = torch.where(keep.bool(), bins, torch.full_like(bins, -1)).reshape(b, -1)
    ok = bins >= 0
    counts = torch.zeros(b, n_bins, dtype=torch.float64, device=flow.device)
    counts.scatter_add_(1, bins.clamp(min=0), ok.double())
    nonempty = (counts > 0).sum(1, keepdim=True).clamp(min=1)
    per_bin = torch.where(counts > 0, ok.sum(1, keepdim=True) / (nonempty * counts), torch.zeros_like(counts))
    w = torch.gather(per_bin, 1, bins.clamp(min=0)) * ok
    return w.reshape(keep.shape).to(torch.float32)


def track_speed(tracks, divisor: str = "frames") -> np.ndarray:
    """Mean speed of each track (N, S, 2) in px/frame: path length / S ("frames", as the
    official Horse10 filter divides by the window length 8) or / (S−1) ("steps")."""
    t = np.asarray(tracks.detach().cpu() if isinstance(tracks, torch.Tensor) else tracks, dtype=np.float64)
    if t.ndim != 3 or t.shape[-1] != 2 or t.shape[1] < 2:
        raise MotionRefineError(f"tracks must be (N, S>=2, 2), got {t.shape}")
    length = np.linalg.norm(np.diff(t, axis=1), axis=-1).sum(1)
    if divisor not in ("frames", "steps"):
        raise MotionRefineError(f"divisor must be 'frames' or 'steps', got {divisor!r}")
    return length / (t.shape[1] if divisor == "frames" else t.shape[1] - 1)


def speed_filter(tracks, min_speed: float = 5.0, divisor: str = "frames", scale: float = 1.0) -> np.ndarray:
    """keep (N,) bool: tracks whose speed (see :func:`track_speed`) times ``scale`` is > ``min_speed``."""
    s = track_speed(tracks, divisor) * scale
    return np.isfinite(s) & (s > min_speed)


def cap_bins(tracks, edges: Sequence[float] = DEFAULT_SPEED_EDGES, max_share: float = 0.5,
             rng: np.random.Generator | None = None, divisor: str = "frames") -> np.ndarray:
    """keep (N,) bool so that no speed bin holds more than ``max_share`` of the kept tracks.

    Over-full bins are subsampled at random (``rng``) down to a common cap c, the largest c
    with c ≤ max_share · Σ_k min(count_k, c); smaller bins are kept whole. Tracks outside
    every bin are dropped. Needs max_share ≥ 1 / (number of non-empty bins).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    s = track_speed(tracks, divisor)
    bins = speed_bin_index(torch.from_numpy(s), edges).numpy()
    n_bins = len(check_speed_edges(edges)) - 1
    counts = np.bincount(bins[bins >= 0], minlength=n_bins)
    nonempty = int((counts > 0).sum())
    keep = np.zeros(len(s), dtype=bool)
    if nonempty == 0:
        return keep
    if max_share * nonempty < 1 - 1e-12:
        raise MotionRefineError(
            f"max_share {max_share} is infeasible with {nonempty} non-empty speed bins (needs >= {1 / nonempty:.3f})")
    cap = 0
    for c in range(int(counts.max()), 0, -1):
        if c <= max_share * np.minimum(counts, c).sum() + 1e-9:
            cap = c
            break
    for k in range(n_bins):
        members = np.flatnonzero(bins == k)
        if len(members) > cap:
            members = rng.choice(members, size=cap, replace=False)
        keep[members] = True
    return keep
