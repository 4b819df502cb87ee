"""The tracker's predictions on one video, the pieces ``track.queries.track_queries`` is built of:
the default grid at frame 0 (``frame0_grid``), one tracker run (``run_tracker``) and the store
(``write_predictions``).

What a user exports as their videos' tracks (``motionrefine.io.track_formats``): the refined
tracker's positions and visibility for every frame. The default grid is the pseudo-labels'
(spacing and border margin scaled to the resolution, :class:`track.labels.TrackLabelConfig`), so
the tracked points match the points the tracker was refined on.

Store (``store.atomic_group``): tracks (N, T, 2) float32 (x, y) px of the frames store,
visible (N, T) bool (visibility > 0.5; the query frame is visible), queries (N, 3)
[t, x, y]; attrs: video, checkpoint and its sha256, size, iters, grid spacing, code version.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import atomic_group, open_group, write_array
from motionrefine.track.densify import grid_queries
from motionrefine.track.labels import TrackLabelConfig

VIS_THRESHOLD = 0.5


def frame0_grid(height: int, width: int, label_options: dict | None = None,
                where: str | os.PathLike = "frames") -> tuple[np.ndarray, float]:
    """The pseudo-labels' grid at frame 0: queries (N, 3) [0, x, y] float32 and its spacing."""
    res = TrackLabelConfig.from_dict(dict(label_options or {})).resolved(height, width)
    xy = grid_queries(height, width, res["grid_spacing"], res["margin"])
    if not len(xy):
        raise MotionRefineError(f"{where}: no grid point fits a {width}x{height} frame at spacing "
                                f"{res['grid_spacing']}")
    queries = np.concatenate([np.zeros((len(xy), 1), np.float32), xy.astype(np.float32)], axis=1)
    return queries, float(res["grid_spacing"])


def run_tracker(frames: np.ndarray, queries: np.ndarray, checkpoint: str | os.PathLike, size: str, iters: int,
                expected_sha256: str | None, dev, raft_checkpoint: str | os.PathLike | None = None):
    """Track queries (N, 3) [t, x, y] forward and backward from each query's frame with the
    tracker ``checkpoint`` on device ``dev``. Returns (tracks (N, T, 2) float32, visible (N, T)
    bool, true at each query's own frame, checkpoint sha256)."""
    from motionrefine.models.pips import load_pips, track_long
    from motionrefine.models.pips.flowpips import FLOWPIPS_SIZE, load_flowpips

    if size == FLOWPIPS_SIZE:
        # The default tracker: chained flow refined per window; ``iters`` are its update
        # iterations, as the tracking comparison runs it. Visible where the logit is positive.
        model, digest = load_flowpips(checkpoint, raft_checkpoint, expected_sha256)
        model.to(dev)
        tracks, logits = model.track(frames, queries, iters=iters)
        visible = np.asarray(logits) > 0  # sigmoid(logit) > VIS_THRESHOLD
    else:
        model, digest = load_pips(checkpoint, size, expected_sha256)
        model.to(dev)
        tracks, vis = track_long(model, frames, queries, S=model.cfg.S, iters=iters, device=dev)
        visible = np.asarray(vis) > VIS_THRESHOLD
    qt = np.asarray(queries)[:, 0].round().astype(np.int64)
    visible[np.arange(len(qt)), qt] = True  # the query frame is visible by definition
    return np.asarray(tracks), visible, digest


def write_predictions(out_path: str | os.PathLike, frames_path: str | os.PathLike, frames_shape: tuple,
                      tracks: np.ndarray, visible: np.ndarray, queries: np.ndarray, attrs: dict) -> str:
    """Write the predictions store atomically; ``attrs`` are added to the shape attrs. Returns the video name."""
    T, H, W = frames_shape[:3]
    video = Path(frames_path).name.removesuffix(".zarr")
    with atomic_group(out_path) as g:
        write_array(g, "tracks", np.ascontiguousarray(tracks, np.float32))
        write_array(g, "visible", np.ascontiguousarray(visible))
        write_array(g, "queries", np.ascontiguousarray(queries, np.float32))
        g.attrs.update({"kind": "track_predictions", "video": video, "num_frames": int(T), "height": int(H),
                        "width": int(W), **attrs,
                        "convention": "tracks[i, t] = (x, y) px at frame t of the frames store"})
    return video
