"""Track a user's own query points (or a grid) through a video's frames store.

Query CSV: one point per line, ``frame,x,y``, with an optional header naming exactly those
three columns (any order). Like CoTracker's ``queries`` (t, x, y), but ``frame`` is the
SOURCE video's frame index and x, y are SOURCE pixels, so a user can pick points in any
player or image tool without knowing how the workflow subsampled or resized the video.
Blank lines are skipped; anything else that is not three numbers is an error naming the
file and line.

Pixel convention (the project's, ``core.geometry``): pixel (i, j) has its centre at x = j,
y = i. Resizing (``io.video``, OpenCV) maps pixel extents onto pixel extents, so a source
position maps to the stored frame as

    x_stored = (x_src + 0.5) * W_stored / W_src - 0.5      (y likewise with H)

whose linear part is the one flow vectors use: flow at source resolution = stored flow ×
(W_src / W_stored, H_src / H_stored). :func:`to_source_pixels` is the exact inverse.
A query must lie inside the source frame's pixel centres, [0, W_src−1] × [0, H_src−1];
when downscaling, the outermost half-pixel of the source maps just beyond the outermost
stored centres and is clamped onto them (by at most 0.5 stored px), so every query starts
inside the tracked frame.

The output is ``track.predict``'s store (tracks, visible, queries, same attrs) plus
``query_source`` ("csv" or "grid"), so ``io.track_formats`` exports it unchanged.
"""

from __future__ import annotations

import bisect
import csv
import logging
import os
import time
from pathlib import Path

import numpy as np

from motionrefine import __version__
from motionrefine.core.device import pick_device
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import open_group
from motionrefine.track.predict import VIS_THRESHOLD, frame0_grid, run_tracker, write_predictions
from motionrefine.track.resolution import at_size, from_size, to_size, tracking_size

log = logging.getLogger("motionrefine")
COLUMNS = ("frame", "x", "y")


def _size(attrs, key: str, where) -> tuple[int, int]:
    """(width, height) from a frames store's ``original_size`` / ``stored_size`` attr."""
    v = attrs.get(key)
    if isinstance(v, dict) and {"width", "height"} <= set(v):
        return int(v["width"]), int(v["height"])
    if isinstance(v, (list, tuple)) and len(v) == 2:  # bench scene stores write [w, h]
        return int(v[0]), int(v[1])
    raise MotionRefineError(f"{where}: the frames store attrs have no {key} (width, height); "
                            "source pixels cannot be mapped to stored ones")


def _sizes(attrs, where) -> tuple[tuple[int, int], tuple[int, int]]:
    """(source, stored) sizes as (height, width) from a frames store's attrs."""
    ws, hs = _size(attrs, "original_size", where)
    wt, ht = _size(attrs, "stored_size", where)
    return (hs, ws), (ht, wt)


def to_stored_pixels(xy, frames_attrs) -> np.ndarray:
    """Source (x, y) px (..., 2) → stored px (float64), pixel centres at integers (module doc)."""
    return to_size(xy, *_sizes(frames_attrs, "frames store"))


def to_source_pixels(tracks, frames_attrs) -> np.ndarray:
    """Stored (x, y) px (..., 2), e.g. tracks (N, T, 2) → source px (float64); NaN stays NaN.
    The inverse of :func:`to_stored_pixels` (a flow vector scales by the same factor, 1/s)."""
    return from_size(tracks, *_sizes(frames_attrs, "frames store"))


def _number(cell: str, what: str, where: str) -> float:
    try:
        v = float(cell)
    except ValueError:
        raise MotionRefineError(f"{where}: {what} {cell.strip()!r} is not a number") from None
    if not np.isfinite(v):
        raise MotionRefineError(f"{where}: {what} {cell.strip()!r} is not a finite number")
    return v


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def read_queries(csv_path: str | os.PathLike, frames_attrs) -> np.ndarray:
    """Query points of ``csv_path`` (source frame, source x, y) as (N, 3) float32
    [t_stored, x_stored, y_stored] of the frames store with attrs ``frames_attrs``
    (``io.video.extract_frames``: frame_indices, original_size, stored_size).
    Every error is a MotionRefineError naming the file and line."""
    path = Path(csv_path)
    if not path.is_file():
        raise MotionRefineError(f"{path}: query CSV not found")
    indices = frames_attrs.get("frame_indices")
    if not indices:
        raise MotionRefineError(f"{path}: the frames store attrs have no frame_indices; "
                                "source frame numbers cannot be mapped to stored frames")
    stored_of = {int(s): i for i, s in enumerate(indices)}
    order = sorted(stored_of)
    ws, hs = _size(frames_attrs, "original_size", path)
    wt, ht = _size(frames_attrs, "stored_size", path)
    # utf-8-sig: spreadsheets often start their CSV with a byte-order mark.
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [(n, row) for n, row in enumerate(csv.reader(fh), start=1) if any(c.strip() for c in row)]
    cols = list(range(3))
    # A header is a first line without any number; a line mixing numbers and text is a bad data line.
    if rows and not any(_is_number(c) for c in rows[0][1]):
        n, head = rows.pop(0)
        names = [c.strip().lower() for c in head]
        if sorted(names) != sorted(COLUMNS):
            raise MotionRefineError(f"{path} line {n}: header {head} must name exactly the columns "
                                    f"{', '.join(COLUMNS)} (any order); or leave it out and give frame,x,y")
        cols = [names.index(c) for c in COLUMNS]
    if not rows:
        raise MotionRefineError(f"{path}: no query points (expected lines frame,x,y)")
    out = np.zeros((len(rows), 3), np.float64)
    for k, (n, row) in enumerate(rows):
        where = f"{path} line {n}"
        if len(row) != 3:
            raise MotionRefineError(f"{where}: {len(row)} column(s) {row}, expected 3 (frame, x, y)")
        f, x, y = (_number(row[c], name, where) for c, name in zip(cols, COLUMNS))
        if f != int(f):
            raise MotionRefineError(f"{where}: frame {row[cols[0]].strip()!r} is not a whole frame index")
        if int(f) not in stored_of:
            i = bisect.bisect_left(order, int(f))
            near = sorted({order[j] for j in (i - 1, i) if 0 <= j < len(order)})
            raise MotionRefineError(
                f"{where}: source frame {int(f)} is not in the frames store (it holds source frames "
                f"{order[0]}..{order[-1]}, {len(order)} of them); nearest stored: "
                f"{' and '.join(map(str, near))}")
        if not (0 <= x <= ws - 1 and 0 <= y <= hs - 1):
            raise MotionRefineError(f"{where}: point ({x:g}, {y:g}) is outside the {ws}x{hs} source frame "
                                    f"(x in [0, {ws - 1}], y in [0, {hs - 1}], pixel centres)")
        out[k] = stored_of[int(f)], x, y
    out[:, 1:] = np.clip(to_stored_pixels(out[:, 1:], frames_attrs), 0.0, [wt - 1, ht - 1])
    return out.astype(np.float32)


def grid_of_size(height: int, width: int, grid_size: int) -> np.ndarray:
    """(g², 3) [0, x, y] float32: a g×g grid at frame 0, one point at the centre of each cell of
    an even g×g split of the frame (CoTracker's ``grid_size``: g points per side)."""
    if isinstance(grid_size, bool) or not isinstance(grid_size, (int, np.integer)) or grid_size < 1:
        raise MotionRefineError(f"grid_size must be a whole number >= 1, got {grid_size!r}")
    g = int(grid_size)
    xs = (np.arange(g) + 0.5) * width / g - 0.5
    ys = (np.arange(g) + 0.5) * height / g - 0.5
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([np.zeros(g * g), gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def track_queries(frames_path: str | os.PathLike, checkpoint: str | os.PathLike, out_path: str | os.PathLike,
                  queries: str | os.PathLike | np.ndarray | None = None, grid_size: int | None = None,
                  size: str = "flow-small", iters: int = 3, raft_checkpoint: str | os.PathLike | None = None,
                  device: str = "auto", threads: int | None = 1, expected_sha256: str | None = None,
                  label_options: dict | None = None, max_pixels: int | None = None) -> int:
    """Track query points through the frames store forward and backward in time from each
    query's own frame; write ``track.predict``'s store. Returns N.

    ``queries``: a query CSV (read by :func:`read_queries` against the store's attrs) or an
    (N, 3) array [t, x, y] already in stored frames and pixels; None: a grid at frame 0,
    ``grid_size`` points per side (:func:`grid_of_size`), or when that is None too exactly
    ``track.predict``'s grid (``label_options`` as there). ``iters``: the tracker's update
    iterations (FlowPips as pre-trained: 3). Both tracker kinds track both ways in time
    (FlowPips.track and, for the PIPs sizes, ``track_long`` on the reversed video).
    ``max_pixels``: frames larger than this are tracked downscaled (``track.resolution``); the
    store's tracks are in stored pixels either way."""
    if queries is not None and grid_size is not None:
        raise MotionRefineError("give query points or a grid_size, not both")
    g = open_group(frames_path)
    frames = g["frames"][...]
    T, H, W = frames.shape[:3]
    if T < 2:
        raise MotionRefineError(f"{frames_path}: {T} frame(s), nothing to track")
    extra = {"query_source": "grid", "grid_size": None, "queries_csv": None}
    spacing = None
    if queries is None and grid_size is None:
        q, spacing = frame0_grid(H, W, label_options, frames_path)
    elif queries is None:
        q = grid_of_size(H, W, grid_size)
        extra["grid_size"] = int(grid_size)
    else:
        extra["query_source"] = "csv"
        if isinstance(queries, (str, os.PathLike)):
            extra["queries_csv"] = str(queries)
            q = read_queries(queries, dict(g.attrs))
        else:
            q = _check_stored(np.asarray(queries, np.float32), T, H, W)
    dev = pick_device(device, threads)
    started = time.perf_counter()
    work = tracking_size(H, W, max_pixels)
    qw = np.concatenate([q[:, :1], to_size(q[:, 1:], (H, W), work)], axis=1).astype(np.float32)
    tracks, visible, digest = run_tracker(at_size(frames, work), qw, checkpoint, size, iters, expected_sha256, dev,
                                          raft_checkpoint)
    tracks = from_size(tracks, (H, W), work).astype(np.float32)
    # The query's own position at its own frame, exactly (the trackers already keep it; this
    # makes it a property of the store rather than of each tracker).
    qt = q[:, 0].astype(np.int64)
    tracks[np.arange(len(q)), qt] = q[:, 1:]
    seconds = time.perf_counter() - started
    video = write_predictions(out_path, frames_path, frames.shape, tracks, visible, q, {
        "checkpoint": str(checkpoint), "checkpoint_sha256": digest, "model_size": size, "iters": int(iters),
        "grid_spacing": spacing, "visibility_threshold": VIS_THRESHOLD, "code_version": __version__,
        "seconds": round(seconds, 3), "device": str(dev), "tracking_size": list(work), **extra})
    log.info("%s: %d %s queries tracked over %d frames (%.1f s, %.0f%% of points visible) -> %s", video, len(q),
             extra["query_source"], T, seconds, 100 * visible.mean(), out_path)
    return len(q)


def _check_stored(q: np.ndarray, T: int, H: int, W: int) -> np.ndarray:
    """An (N, 3) array of stored queries: whole frames in the store, points inside the frame."""
    if q.ndim != 2 or q.shape[1] != 3 or not len(q):
        raise MotionRefineError(f"queries must be (N, 3) [t, x, y] with N >= 1, got shape {q.shape}")
    if not np.isfinite(q).all():
        raise MotionRefineError("queries contain NaN or infinite values")
    bad = (q[:, 0] != np.round(q[:, 0])) | (q[:, 0] < 0) | (q[:, 0] > T - 1)
    bad |= (q[:, 1] < 0) | (q[:, 1] > W - 1) | (q[:, 2] < 0) | (q[:, 2] > H - 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MotionRefineError(f"query {i} {q[i].tolist()} is not a stored frame in [0, {T - 1}] with a point "
                                f"inside the {W}x{H} stored frame ({int(bad.sum())} such queries)")
    return q
