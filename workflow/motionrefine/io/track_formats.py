"""Point tracks as files other tools read: a CSV of points and a TAP-Vid-style pickle.

Both start from a tracking store of the workflow, read by :func:`read_track_store` into
dense arrays over the video's frames: tracks (N, T, 2) float32 (x, y) in the frames store's
pixels (integer pixel centres, the project convention), NaN where the store has no point,
and visible (N, T) bool.

- the pseudo-labels (``track.labels``): S-frame tracks starting at ``window_start``, every
  point visible; outside its window a track has no point;
- the tracker's predictions (``track.predict``): whole-video tracks with the tracker's
  visibility.

Formats:
- CSV, one row per defined point: ``track, frame, x, y, visible`` (visible 0/1, frame = index
  into the frames store).
- TAP-Vid pickle: ``{video: {"video": (T, H, W, 3) uint8, "points": (N, T, 2) float32,
  "occluded": (N, T) bool}}`` as TAP-Vid DAVIS, points normalised over the image extent
  (TAP-Vid's convention: ``(x + 0.5) / W``, see :mod:`motionrefine.io.readers.tapvid`).
  Frames without a point are occluded; their coordinates repeat the nearest defined point
  (TAP-Vid has no "unknown" marker). ``read_tapvid(path, resolution=None,
  pixel_convention="centre")`` gives back the stored pixels.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import open_group, write_atomic

EXPORT_FORMATS = {"csv": "csv", "tapvid": "pkl"}
CSV_COLUMNS = ["track", "frame", "x", "y", "visible"]


def read_track_store(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A labels or predictions store as dense (tracks (N, T, 2) with NaN where undefined, visible (N, T))."""
    g = open_group(path)
    attrs = dict(g.attrs)
    if "window_start" in g and "tracks" in g:  # pseudo-labels: windows of S frames
        win = g["tracks"][...].astype(np.float32)
        start = g["window_start"][...].astype(np.int64)
        T = int(attrs.get("num_frames", 0))
        n, S = win.shape[:2]
        if n and (start.min() < 0 or start.max() + S > T):
            raise MotionRefineError(f"{path}: windows reach past the store's {T} frames")
        tracks = np.full((n, T, 2), np.nan, np.float32)
        rows = np.repeat(np.arange(n), S)
        cols = (start[:, None] + np.arange(S)[None]).ravel()
        tracks[rows, cols] = win.reshape(-1, 2)
        return tracks, np.isfinite(tracks).all(-1)
    if "tracks" in g and "visible" in g:  # predictions over the whole video
        tracks = g["tracks"][...].astype(np.float32)
        visible = g["visible"][...].astype(bool)
        if tracks.shape[:2] != visible.shape or tracks.ndim != 3:
            raise MotionRefineError(f"{path}: tracks {tracks.shape} and visible {visible.shape} do not match")
        return tracks, visible & np.isfinite(tracks).all(-1)
    raise MotionRefineError(f"{path}: not a tracking store (expects tracks with window_start, or tracks with visible)")


def tracks_frame(tracks: np.ndarray, visible: np.ndarray, frame_indices=None) -> pd.DataFrame:
    """One row per defined point (finite coordinates): track, frame, x, y, visible. ``frame_indices``:
    write each frame as its source frame index instead of its index in the frames store."""
    n, t = np.nonzero(np.isfinite(tracks).all(-1))
    frame = t if frame_indices is None else np.asarray(frame_indices, np.int64)[t]
    return pd.DataFrame({"track": n, "frame": frame, "x": tracks[n, t, 0], "y": tracks[n, t, 1],
                         "visible": visible[n, t].astype(np.int8)}, columns=CSV_COLUMNS)


def write_tracks_csv(path: str | os.PathLike, tracks: np.ndarray, visible: np.ndarray, frame_indices=None) -> int:
    """Write the CSV atomically. Returns the number of rows."""
    df = tracks_frame(tracks, visible, frame_indices)
    write_atomic(path, lambda tmp: df.to_csv(tmp, index=False, float_format="%.4f"))
    return len(df)


def _fill_undefined(tracks: np.ndarray) -> np.ndarray:
    """NaN points -> the nearest defined point of the same track (earlier one on a tie); 0 if none."""
    out = tracks.copy()
    defined = np.isfinite(tracks).all(-1)
    T = tracks.shape[1]
    for i in np.flatnonzero(~defined.all(1)):
        have = np.flatnonzero(defined[i])
        if not len(have):
            out[i] = 0.0
            continue
        pos = np.searchsorted(have, np.arange(T)).clip(0, len(have) - 1)
        prev = have[(pos - 1).clip(0)]
        nxt = have[pos]
        frames = np.arange(T)
        nearest = np.where(np.abs(frames - prev) <= np.abs(nxt - frames), prev, nxt)
        out[i] = tracks[i, nearest]
    return out


def _tapvid_example(name: str, frames: np.ndarray, tracks: np.ndarray, visible: np.ndarray) -> dict:
    """One video as TAP-Vid stores it: ``{video, points (normalised), occluded}``."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MotionRefineError(f"{name}: frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    T, H, W = frames.shape[:3]
    if tracks.shape[1] != T:
        raise MotionRefineError(f"{name}: tracks cover {tracks.shape[1]} frames, the video has {T}")
    points = (_fill_undefined(tracks).astype(np.float64) + 0.5) / np.array([W, H], np.float64)
    return {"video": np.ascontiguousarray(frames), "points": points.astype(np.float32),
            "occluded": ~np.asarray(visible, bool)}


def write_tapvid_pickle(path: str | os.PathLike, videos: Mapping[str, tuple]) -> None:
    """Write ``{name: {video, points, occluded}}`` (TAP-Vid DAVIS layout) atomically, from
    ``videos``: name -> (frames (T, H, W, 3) uint8, tracks (N, T, 2) px, visible (N, T) bool)."""
    data = {name: _tapvid_example(name, *video) for name, video in videos.items()}

    def dump(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL)

    write_atomic(path, dump)


def export_track_store(store_path: str | os.PathLike, frames_path: str | os.PathLike, out_path: str | os.PathLike,
                       fmt: str, name: str) -> int:
    """One tracking store as ``fmt`` (a key of :data:`EXPORT_FORMATS`). Returns the number of tracks."""
    if fmt not in EXPORT_FORMATS:
        raise MotionRefineError(f"unknown track export format {fmt!r} (expected one of {sorted(EXPORT_FORMATS)})")
    tracks, visible = read_track_store(store_path)
    if fmt == "csv":
        write_tracks_csv(out_path, tracks, visible)
    else:
        write_tapvid_pickle(out_path, {name: (open_group(frames_path)["frames"][...], tracks, visible)})
    return len(tracks)
