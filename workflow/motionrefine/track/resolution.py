"""The tracker's working size: frames larger than ``tracking.max_pixels`` are tracked downscaled.

The tracker chains RAFT over every pair of a video and holds its features, so its cost and
memory grow with the pixels (a 960×540 clip costs ~5× a 448×256 one), while its label threshold
and grid are already defined relative to 256×448 (``track.labels``). Labels stores record the
size they were made at (attrs ``height``/``width``); everything that reads them with the frames
(fine-tuning, the guard) resizes the frames to it. Predictions are scaled back, so a predictions
store is always in the frames store's pixels."""

from __future__ import annotations

import math

import numpy as np

from motionrefine.core.limits import RAFT_MIN_SIDE
from motionrefine.io.video import resize_frames


def tracking_size(height: int, width: int, max_pixels: int | None) -> tuple[int, int]:
    """(height, width) the tracker runs at: the stored size when it holds at most ``max_pixels``
    (None or 0: no cap), else the aspect-preserving size of at most that many pixels (each side
    at least RAFT's minimum)."""
    if not max_pixels or height * width <= max_pixels:
        return int(height), int(width)
    s = math.sqrt(max_pixels / (height * width))
    return max(RAFT_MIN_SIDE, int(height * s)), max(RAFT_MIN_SIDE, int(width * s))


def at_size(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """(T, H, W, 3) frames at ``size`` = (height, width) (None: as they are)."""
    return frames if size is None else resize_frames(np.asarray(frames), tuple(size))


def _scale(src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    (H, W), (h, w) = src, dst
    return np.array([w / W, h / H], np.float64)


def to_size(xy, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """Points (..., 2) (x, y) in pixels of a frame of size ``src`` → pixels of the same frame
    resized to ``dst`` (both (height, width)), pixel centres at integers, as cv2 resizes."""
    return (np.asarray(xy, np.float64) + 0.5) * _scale(src, dst) - 0.5


def from_size(xy, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """The inverse of :func:`to_size`: points at ``dst`` → pixels at ``src``; NaN stays NaN."""
    return (np.asarray(xy, np.float64) + 0.5) / _scale(src, dst) - 0.5
