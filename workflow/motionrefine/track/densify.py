"""Query points, forward-backward verification and densification of tracker pseudo-labels,
one S-frame window at a time.

Per window: seed queries at the window's first frame (a regular grid or corner features)
are tracked forward and back (``chain.verify_tracks``) and kept iff the two agree within
θ px at every frame. Around each kept seed a w×w integer grid of extra queries
(``chain.densify_queries``) is verified the same way; the labels are the forward tracks.

Resolution: the official constants are for 256×448 frames (θ = 3 px for Horse10), so θ,
the grid spacing, the border margin and w are given at that reference size and scaled by
the ratio of frame diagonals (``resolution_scale``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from motionrefine.core.errors import MotionRefineError
from motionrefine.track.chain import densify_queries, verify_tracks

REF_SIZE = (256, 448)  # (height, width) the official Horse10 constants refer to


def resolution_scale(height: int, width: int, ref: tuple[int, int] = REF_SIZE) -> float:
    """Frame diagonal / reference diagonal."""
    return float(np.hypot(height, width) / np.hypot(*ref))


def scaled_theta(height: int, width: int, theta_ref: float = 3.0) -> float:
    """θ = theta_ref · (frame diagonal / diagonal of 256×448)."""
    return float(theta_ref) * resolution_scale(height, width)


def scaled_size(height: int, width: int, value_ref: float, minimum: int = 1) -> int:
    """An integer length given at the reference size, scaled to this frame size."""
    return max(minimum, int(round(value_ref * resolution_scale(height, width))))


def window_starts(num_frames: int, S: int, stride: int | None = None, include_tail: bool = True) -> list[int]:
    """First frames of the S-frame windows: 0, stride, 2·stride, … (default stride S//2); with
    ``include_tail`` a last window ending at the final frame is added if the stride misses it."""
    stride = S // 2 if stride is None else int(stride)
    if stride < 1:
        raise MotionRefineError(f"window stride must be >= 1, got {stride}")
    if num_frames < S:
        return []
    starts = list(range(0, num_frames - S + 1, stride))
    if include_tail and starts[-1] != num_frames - S:
        starts.append(num_frames - S)
    return starts


def grid_queries(height: int, width: int, spacing: float, margin: float = 0.0) -> np.ndarray:
    """(N, 2) [x, y] float32: a regular grid of step ``spacing`` centred in the frame, at
    least ``margin`` px from the border, on integer pixels."""
    if spacing <= 0:
        raise MotionRefineError(f"grid spacing must be > 0, got {spacing}")

    def axis(n: int) -> np.ndarray:
        lo, hi = margin, n - 1 - margin
        if hi < lo:
            return np.zeros(0)
        k = int(np.floor((hi - lo) / spacing)) + 1
        off = (hi - lo - (k - 1) * spacing) / 2  # centre the grid
        return np.round(lo + off + spacing * np.arange(k))

    xs, ys = axis(width), axis(height)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def corner_queries(frame: np.ndarray, max_corners: int = 200, quality: float = 0.01, min_distance: float = 8.0,
                   margin: float = 0.0) -> np.ndarray:
    """(N, 2) [x, y] float32 Shi–Tomasi corners (``cv2.goodFeaturesToTrack``) of an RGB frame,
    at least ``margin`` px from the border; strongest first."""
    grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    pts = cv2.goodFeaturesToTrack(grey, maxCorners=int(max_corners), qualityLevel=float(quality),
                                  minDistance=float(min_distance))
    if pts is None:
        return np.zeros((0, 2), np.float32)
    pts = pts.reshape(-1, 2).astype(np.float32)
    h, w = grey.shape
    ok = (pts[:, 0] >= margin) & (pts[:, 0] <= w - 1 - margin) & (pts[:, 1] >= margin) & (pts[:, 1] <= h - 1 - margin)
    return pts[ok]


@dataclass
class WindowLabels:
    """Verified tracks of one window. origin: 0 = seed query, 1 = densified query."""

    tracks: np.ndarray      # (M, S, 2) float32 forward tracks
    origin: np.ndarray      # (M,) int8
    fb_dist: np.ndarray     # (M,) float32 max forward-backward distance
    n_seeds: int
    n_seeds_kept: int
    n_dense: int
    n_dense_kept: int

    def stats(self) -> dict:
        return {"seeds": self.n_seeds, "seeds_kept": self.n_seeds_kept, "dense": self.n_dense,
                "dense_kept": self.n_dense_kept, "tracks": int(len(self.tracks))}


def verify_and_densify(track_fn, frames_window: np.ndarray, seeds: np.ndarray, theta: float, w: int = 0,
                       max_dense_seeds: int | None = None, rng: np.random.Generator | None = None) -> WindowLabels:
    """Verify ``seeds`` (N, 2) at frame 0 of ``frames_window`` (S, H, W, 3); then densify around
    up to ``max_dense_seeds`` kept seeds (random choice by ``rng``; None: all) with a w×w grid
    (w = 0: no densification) and verify those. Dense queries that coincide with a seed
    (within 0.5 px) are left out, so no track appears twice."""
    seeds = np.asarray(seeds, np.float32).reshape(-1, 2)
    S, H, W = frames_window.shape[:3]
    empty = np.zeros((0, S, 2), np.float32)
    if len(seeds):
        fwd, keep, dist = verify_tracks(track_fn, frames_window, seeds, theta)
    else:
        fwd, keep, dist = empty, np.zeros(0, bool), np.zeros(0, np.float32)
    parts = [(fwd[keep], np.zeros(int(keep.sum()), np.int8), dist[keep])]
    n_dense = n_dense_kept = 0
    if w > 0 and keep.any():
        anchors = seeds[keep]
        if max_dense_seeds is not None and len(anchors) > max_dense_seeds:
            rng = rng if rng is not None else np.random.default_rng(0)
            anchors = anchors[np.sort(rng.choice(len(anchors), size=int(max_dense_seeds), replace=False))]
        dense = densify_queries(anchors, int(w), H, W).astype(np.float32)
        if len(dense):
            d2 = ((dense[:, None, :] - seeds[None, :, :]) ** 2).sum(-1)
            dense = dense[d2.min(axis=1) >= 0.25]
        n_dense = len(dense)
        if n_dense:
            dfwd, dkeep, ddist = verify_tracks(track_fn, frames_window, dense, theta)
            n_dense_kept = int(dkeep.sum())
            parts.append((dfwd[dkeep], np.ones(n_dense_kept, np.int8), ddist[dkeep]))
    tracks = np.concatenate([p[0] for p in parts]).astype(np.float32).reshape(-1, S, 2)
    return WindowLabels(tracks, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]),
                        len(seeds), int(keep.sum()), n_dense, n_dense_kept)
