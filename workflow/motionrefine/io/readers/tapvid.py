"""TAP-Vid track pickles (DAVIS, Kinetics) as :class:`TrackScene`.

TAP-Vid pixel convention: the pickles store points normalised to [0, 1] over the
image *extent*, and the official evaluation turns them into pixels as
``point * [width, height]`` of the (resized) frames. With that convention pixel
(i, j) covers [j, j+1) and its centre is at j + 0.5, half a pixel off the project's
integer-centre convention. ``read_tapvid(pixel_convention="tapvid")`` (default)
reproduces the official numbers; ``"centre"`` subtracts 0.5 so tracks line up with
``geometry.sample_bilinear``. Metrics are invariant to the choice as long as ground
truth, queries and predictions all use the same one.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from motionrefine.core.errors import AssetMissingError, MotionRefineError
from motionrefine.io.readers.scenes import TrackScene
from motionrefine.io.video import resize_frames  # noqa: F401  (re-exported by io.readers)

TAPVID_RESOLUTION = (256, 256)  # (height, width) of the official evaluation
TAPVID_QUERY_STRIDE = 5


def sample_queries_first(tracks: np.ndarray, occluded: np.ndarray):
    """TAP-Vid "query first": one query per track at its first visible frame; never-visible tracks dropped.

    Returns (tracks, occluded, query_frame, source_index).
    """
    visible = ~occluded
    keep = visible.any(axis=1)
    query_frame = np.argmax(visible[keep], axis=1)  # argmax of bool = first True
    return tracks[keep], occluded[keep], query_frame.astype(np.int64), np.flatnonzero(keep)


def sample_queries_strided(tracks: np.ndarray, occluded: np.ndarray, stride: int = TAPVID_QUERY_STRIDE):
    """TAP-Vid "query strided": at frames 0, stride, 2·stride, … every track visible there
    becomes a query (so one track can yield several). Returns (tracks, occluded, query_frame, source_index)."""
    if stride < 1:
        raise MotionRefineError(f"query stride must be >= 1, got {stride}")
    idx, qf = [], []
    for t in range(0, occluded.shape[1], stride):
        vis = np.flatnonzero(~occluded[:, t])
        idx.append(vis)
        qf.append(np.full(len(vis), t, np.int64))
    idx = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    return tracks[idx], occluded[idx], np.concatenate(qf) if qf else np.zeros(0, np.int64), idx


def _decode_video(video, where) -> np.ndarray:
    """Video as (T, H, W, 3) uint8 RGB from an array or a list of encoded (JPEG/PNG) frames."""
    if isinstance(video, np.ndarray) and video.dtype != object:
        arr = video
    else:
        frames = []
        for i, fr in enumerate(video):
            if isinstance(fr, (bytes, bytearray, memoryview)):
                img = cv2.imdecode(np.frombuffer(fr, np.uint8), cv2.IMREAD_COLOR)
                if img is None:
                    raise MotionRefineError(f"{where}: frame {i} cannot be decoded")
                frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
            else:
                frames.append(np.asarray(fr))
        if not frames:
            raise MotionRefineError(f"{where}: video has no frames")
        arr = np.stack(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise MotionRefineError(f"{where}: video must be (T, H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    return arr


def tapvid_scene(name: str, video, points, occluded, query_mode: str = "first",
                 resolution: tuple[int, int] | None = TAPVID_RESOLUTION, pixel_convention: str = "tapvid",
                 query_stride: int = TAPVID_QUERY_STRIDE) -> TrackScene:
    """One TAP-Vid example (normalised points) to a :class:`TrackScene` in pixels of the
    (resized) frames: ``x = point_x · width``, ``y = point_y · height`` (``"tapvid"``), minus
    0.5 for ``"centre"``. ``resolution`` is (height, width); None keeps the original size."""
    if query_mode not in ("first", "strided"):
        raise MotionRefineError(f"query_mode must be 'first' or 'strided', got {query_mode!r}")
    if pixel_convention not in ("tapvid", "centre"):
        raise MotionRefineError(f"pixel_convention must be 'tapvid' or 'centre', got {pixel_convention!r}")
    frames = _decode_video(video, name)
    points = np.asarray(points, dtype=np.float64)
    occ = np.asarray(occluded).astype(bool)
    t = frames.shape[0]
    if points.ndim != 3 or points.shape[1:] != (t, 2) or occ.shape != points.shape[:2]:
        raise MotionRefineError(
            f"{name}: points {points.shape} / occluded {occ.shape} do not match a video of {t} frames")
    if resolution is not None:
        frames = resize_frames(frames, tuple(resolution))
    h, w = frames.shape[1:3]
    pix = points * np.array([w, h], dtype=np.float64)
    if pixel_convention == "centre":
        pix -= 0.5
    if query_mode == "first":
        tracks, occ_q, qf, src = sample_queries_first(pix, occ)
    else:
        tracks, occ_q, qf, src = sample_queries_strided(pix, occ, query_stride)
    return TrackScene(name, frames, tracks.astype(np.float32), occ_q, qf, query_mode,
                      meta={"benchmark": "tapvid", "track_index": src, "pixel_convention": pixel_convention})


def _load_pickle(path: Path):
    # Pickles can run code when loaded: only read TAP-Vid files from a trusted source.
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError) as exc:
        raise MotionRefineError(f"{path}: not a readable TAP-Vid pickle ({exc})") from None


def _tapvid_examples(path: Path) -> Iterator[tuple[str, dict]]:
    data = _load_pickle(path)
    if isinstance(data, dict):  # DAVIS / RGB-Stacking: {video_name: example}
        items = [(str(k), v) for k, v in data.items()]
    elif isinstance(data, (list, tuple)):  # Kinetics shards: [example, ...]
        items = [(f"{path.stem}_{i:04d}", v) for i, v in enumerate(data)]
    else:
        raise MotionRefineError(f"{path}: expected a dict or list of TAP-Vid examples, got {type(data).__name__}")
    for name, ex in items:
        if not isinstance(ex, dict) or not {"video", "points", "occluded"} <= set(ex):
            raise MotionRefineError(f"{path}: example {name!r} lacks video/points/occluded")
        yield name, ex


def read_tapvid(path, query_mode: str = "first", resolution: tuple[int, int] | None = TAPVID_RESOLUTION,
                videos: Iterable[str] | None = None, pixel_convention: str = "tapvid",
                query_stride: int = TAPVID_QUERY_STRIDE) -> Iterator[TrackScene]:
    """TAP-Vid DAVIS (one dict pickle) or Kinetics (list pickles; ``path`` may be the folder of
    ``*_of_0010.pkl`` shards). Kinetics examples are named ``<shard stem>_<index:04d>``."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.pkl"))
        if not files:
            raise AssetMissingError(f"no .pkl files in TAP-Vid folder {p}")
    elif p.is_file():
        files = [p]
    else:
        raise AssetMissingError(f"TAP-Vid pickle not found: {p}")
    wanted = None if videos is None else set(videos)
    seen = set()
    for f in files:
        for name, ex in _tapvid_examples(f):
            if wanted is not None and name not in wanted:
                continue
            seen.add(name)
            yield tapvid_scene(name, ex["video"], ex["points"], ex["occluded"], query_mode, resolution,
                               pixel_convention, query_stride)
    if wanted is not None and wanted - seen:
        raise MotionRefineError(f"{p}: video(s) not found: {sorted(wanted - seen)}")
