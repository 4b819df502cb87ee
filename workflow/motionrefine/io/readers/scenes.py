"""The two scene types the evaluate stage sees: :class:`FlowScene` and :class:`TrackScene`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from motionrefine.core.errors import MotionRefineError


@dataclass
class FlowScene:
    """Frames plus dense ground-truth forward flow for each consecutive pair."""

    name: str
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    flow: np.ndarray  # (T-1, H, W, 2) float32, pair t -> t+1
    valid: np.ndarray  # (T-1, H, W) bool
    occluded: np.ndarray | None = None  # (T-1, H, W) bool, True = not visible in frame t+1
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        f = self.frames
        if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8 or f.shape[0] < 2:
            raise MotionRefineError(f"{self.name}: frames must be (T>=2, H, W, 3) uint8, got {f.shape} {f.dtype}")
        t, h, w = f.shape[:3]
        if self.flow.shape != (t - 1, h, w, 2):
            raise MotionRefineError(f"{self.name}: flow shape {self.flow.shape} != {(t - 1, h, w, 2)}")
        if self.valid.shape != (t - 1, h, w) or self.valid.dtype != bool:
            raise MotionRefineError(f"{self.name}: valid must be bool {(t - 1, h, w)}, got {self.valid.shape} {self.valid.dtype}")
        if self.occluded is not None and (self.occluded.shape != (t - 1, h, w) or self.occluded.dtype != bool):
            raise MotionRefineError(f"{self.name}: occluded must be bool {(t - 1, h, w)}, got {self.occluded.shape}")

    @property
    def num_pairs(self) -> int:
        return self.flow.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.frames.shape[1], self.frames.shape[2]


@dataclass
class TrackScene:
    """Frames plus point tracks; each track is scored only relative to its query frame."""

    name: str
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    tracks: np.ndarray  # (N, T, 2) float32 xy pixels
    occluded: np.ndarray  # (N, T) bool
    query_frame: np.ndarray  # (N,) int
    query_mode: str = "first"  # how queries were sampled; metrics need it ("first" | "strided")
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        f = self.frames
        if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise MotionRefineError(f"{self.name}: frames must be (T, H, W, 3) uint8, got {f.shape} {f.dtype}")
        t = f.shape[0]
        n = self.tracks.shape[0]
        if self.tracks.shape != (n, t, 2):
            raise MotionRefineError(f"{self.name}: tracks shape {self.tracks.shape} != (N, {t}, 2)")
        if self.occluded.shape != (n, t) or self.occluded.dtype != bool:
            raise MotionRefineError(f"{self.name}: occluded must be bool (N={n}, T={t}), got {self.occluded.shape}")
        if self.query_frame.shape != (n,):
            raise MotionRefineError(f"{self.name}: query_frame shape {self.query_frame.shape} != ({n},)")
        if n and (self.query_frame.min() < 0 or self.query_frame.max() >= t):
            raise MotionRefineError(f"{self.name}: query frame outside [0, {t})")
        if self.query_mode not in ("first", "strided"):
            raise MotionRefineError(f"{self.name}: unknown query_mode {self.query_mode!r}")

    @property
    def query_xy(self) -> np.ndarray:
        """(N, 2) xy of each track at its query frame."""
        return self.tracks[np.arange(len(self.query_frame)), self.query_frame]

    @property
    def query_points(self) -> np.ndarray:
        """(N, 3) queries as (t, x, y), float32. Note TAP-Vid's own query_points are (t, y, x)."""
        return np.concatenate([self.query_frame[:, None].astype(np.float32), self.query_xy], axis=1)
