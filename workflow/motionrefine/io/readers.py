"""Benchmark readers: one in-memory interface for every evaluation data set.

The evaluate stage only ever sees two types:

- :class:`FlowScene`: frames (T, H, W, 3) uint8 RGB, ground-truth forward flow for each
  pair (t, t+1) as (T−1, H, W, 2) float32 (u, v) in pixels, a validity mask and an
  optional occlusion mask. Pixel centres are at integer coordinates (see ``geometry``);
  all these benchmarks already use that convention for flow, which is a displacement.
- :class:`TrackScene`: frames, tracks (N, T, 2) float32 xy pixels, occlusion (N, T)
  and the query frame of each track.

Readers yield scenes lazily (a Sintel scene is ~250 MB in memory) and raise
:class:`MotionRefineError` naming the file or folder at fault.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from motionrefine.core.errors import AssetMissingError, MotionRefineError
from motionrefine.io.flow_formats import flow_valid_mask, read_disparity, read_flo, read_kitti_flow

TAPVID_RESOLUTION = (256, 256)  # (height, width) of the official evaluation
TAPVID_QUERY_STRIDE = 5


# --------------------------------------------------------------------------- scene types


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


# --------------------------------------------------------------------------- image helpers


def read_rgb(path) -> np.ndarray:
    """Read an 8-bit image as (H, W, 3) uint8 RGB; grey images are replicated to 3 channels."""
    p = Path(path)
    if not p.is_file():
        raise AssetMissingError(f"image not found: {p}")
    img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise MotionRefineError(f"{p}: cannot be decoded as an image")
    return _to_rgb8(img, p)


def _to_rgb8(img: np.ndarray, where) -> np.ndarray:
    if img.dtype != np.uint8:
        raise MotionRefineError(f"{where}: expected an 8-bit image, got {img.dtype}")
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    if img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    raise MotionRefineError(f"{where}: unsupported channel count {img.shape[2]}")


def _read_mask(path) -> np.ndarray:
    """Binary PNG mask (any channel count): True where the pixel is bright (> 127)."""
    p = Path(path)
    img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise MotionRefineError(f"{p}: cannot be decoded as a mask image")
    if img.ndim == 3:
        img = img.max(axis=2)
    threshold = 127 if img.dtype == np.uint8 else (np.iinfo(img.dtype).max // 2 if img.dtype.kind == "u" else 0.5)
    return img > threshold


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise AssetMissingError(f"{what} folder not found: {path}")
    return path


def _training_root(root) -> Path:
    """Accept either the benchmark root (holding ``training/``) or ``training/`` itself."""
    r = Path(root)
    if (r / "training").is_dir():
        return r / "training"
    if not r.is_dir():
        raise AssetMissingError(f"benchmark folder not found: {r}")
    return r


def _select(available: Sequence[str], wanted: Iterable[str] | None, where) -> list[str]:
    if wanted is None:
        return list(available)
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)  # a bare name is one scene, not letters
    missing = [s for s in wanted if s not in available]
    if missing:
        raise MotionRefineError(f"{where}: scene(s) not found: {missing}")
    return wanted


# --------------------------------------------------------------------------- MPI-Sintel


def read_sintel(root, split: str = "final", scenes: Iterable[str] | None = None,
                max_frames: int | None = None, occlusions: bool = True) -> Iterator[FlowScene]:
    """MPI-Sintel training scenes (``training/{clean,final,flow,occlusions}/{scene}/frame_XXXX.*``).

    ``flow/{scene}/frame_0001.flo`` is the pair frame_0001 -> frame_0002; an occlusion PNG
    is white where the pixel of frame t is occluded in t+1. ``max_frames`` keeps the first
    frames of each scene (for quick runs). Occlusion masks are attached when present.
    """
    if split not in ("clean", "final"):
        raise MotionRefineError(f"Sintel split must be 'clean' or 'final', got {split!r}")
    base = _training_root(root)
    img_root = _require_dir(base / split, f"Sintel {split}")
    flow_root = _require_dir(base / "flow", "Sintel flow")
    occ_root = base / "occlusions"
    available = sorted(d.name for d in img_root.iterdir() if d.is_dir())
    for scene in _select(available, scenes, img_root):
        frame_files = sorted((img_root / scene).glob("frame_*.png"))
        if max_frames is not None:
            frame_files = frame_files[:max_frames]
        if len(frame_files) < 2:
            raise MotionRefineError(f"{img_root / scene}: needs at least 2 frame_XXXX.png files, found {len(frame_files)}")
        frames = np.stack([read_rgb(f) for f in frame_files])
        flows, valids, occs = [], [], []
        have_occ = occlusions and (occ_root / scene).is_dir()
        for f in frame_files[:-1]:
            flo = read_flo(flow_root / scene / (f.stem + ".flo"))
            if flo.shape[:2] != frames.shape[1:3]:
                raise MotionRefineError(f"{flow_root / scene / (f.stem + '.flo')}: size {flo.shape[:2]} != frames {frames.shape[1:3]}")
            ok = flow_valid_mask(flo)
            flows.append(np.where(ok[..., None], flo, 0.0).astype(np.float32))
            valids.append(ok)
            if have_occ:
                occ_file = occ_root / scene / f.name
                if not occ_file.is_file():
                    raise AssetMissingError(f"Sintel occlusion mask not found: {occ_file}")
                occs.append(_read_mask(occ_file))
        yield FlowScene(scene, frames, np.stack(flows), np.stack(valids),
                        np.stack(occs) if have_occ else None,
                        meta={"benchmark": "sintel", "split": split, "frames": [f.name for f in frame_files]})


# --------------------------------------------------------------------------- KITTI 2015


def read_kitti2015(root, mode: str = "occ", scenes: Iterable[str] | None = None) -> Iterator[FlowScene]:
    """KITTI 2015 training pairs: ``image_2/XXXXXX_10.png``, ``_11.png`` and ``flow_{occ,noc}/XXXXXX_10.png``.

    ``mode="occ"`` scores all pixels with ground truth, ``"noc"`` only non-occluded ones.
    When both ground-truth folders exist, ``occluded`` = in flow_occ but not in flow_noc.
    """
    if mode not in ("occ", "noc"):
        raise MotionRefineError(f"KITTI mode must be 'occ' or 'noc', got {mode!r}")
    base = _training_root(root)
    img_root = _require_dir(base / "image_2", "KITTI image_2")
    gt_root = _require_dir(base / f"flow_{mode}", f"KITTI flow_{mode}")
    other = base / ("flow_noc" if mode == "occ" else "flow_occ")
    available = sorted(p.name[:-len("_10.png")] for p in img_root.glob("*_10.png"))
    for scene in _select(available, scenes, img_root):
        frames = np.stack([read_rgb(img_root / f"{scene}_10.png"), read_rgb(img_root / f"{scene}_11.png")])
        flow, valid = read_kitti_flow(gt_root / f"{scene}_10.png")
        if flow.shape[:2] != frames.shape[1:3]:
            raise MotionRefineError(f"{gt_root / f'{scene}_10.png'}: size {flow.shape[:2]} != image {frames.shape[1:3]}")
        occluded = None
        if (other / f"{scene}_10.png").is_file():
            _, valid_other = read_kitti_flow(other / f"{scene}_10.png")
            valid_occ, valid_noc = (valid, valid_other) if mode == "occ" else (valid_other, valid)
            occluded = (valid_occ & ~valid_noc)[None]
        yield FlowScene(scene, frames, flow[None], valid[None], occluded,
                        meta={"benchmark": "kitti2015", "mode": mode})


# --------------------------------------------------------------------------- Middlebury stereo as flow


def stereo_flow_scene(name: str, left: np.ndarray, right: np.ndarray, disparity: np.ndarray) -> FlowScene:
    """Rectified stereo pair as a 2-frame flow scene: left -> right flow is (−d, 0); valid = finite d."""
    if left.shape != right.shape or disparity.shape != left.shape[:2]:
        raise MotionRefineError(
            f"{name}: left {left.shape}, right {right.shape} and disparity {disparity.shape} sizes disagree")
    valid = np.isfinite(disparity)
    flow = np.zeros(disparity.shape + (2,), np.float32)
    flow[..., 0] = np.where(valid, -disparity, 0.0)
    return FlowScene(name, np.stack([left, right]), flow[None], valid[None], None,
                     meta={"benchmark": "middlebury_stereo"})


def read_middlebury_stereo_pair(left, right, disparity, name: str | None = None) -> FlowScene:
    """One stereo pair from explicit paths; disparity as ``.npz`` (arr_0), ``.npy`` or ``.pfm``."""
    left, right, disparity = Path(left), Path(right), Path(disparity)
    return stereo_flow_scene(name or left.parent.name, read_rgb(left), read_rgb(right), read_disparity(disparity))


def _stereo_files(d: Path) -> tuple[Path, Path, Path] | None:
    """Find (left, right, disparity) in a scene folder: Middlebury 2014 (im0/im1/disp0.pfm)
    or the ``<name>_left.png``/``_right.png``/``_disp.npz`` layout of ../shared."""
    if (d / "im0.png").is_file() and (d / "im1.png").is_file():
        for disp in ("disp0.pfm", "disp0GT.pfm", "disp0.npz", "disp0.npy"):
            if (d / disp).is_file():
                return d / "im0.png", d / "im1.png", d / disp
        return None
    for left in sorted(d.glob("*_left.png")):
        stem = left.name[: -len("_left.png")]
        right = d / f"{stem}_right.png"
        for ext in (".npz", ".pfm", ".npy"):
            disp = d / f"{stem}_disp{ext}"
            if right.is_file() and disp.is_file():
                return left, right, disp
    return None


def read_middlebury_stereo(root, scenes: Iterable[str] | None = None) -> Iterator[FlowScene]:
    """Middlebury stereo scenes as flow. ``root`` is one scene folder or a folder of scene folders."""
    r = Path(root)
    if not r.is_dir():
        raise AssetMissingError(f"Middlebury stereo folder not found: {r}")
    files = _stereo_files(r)
    if files is not None:
        candidates = {r.name: files}
    else:
        candidates = {d.name: f for d in sorted(r.iterdir()) if d.is_dir() and (f := _stereo_files(d))}
    if not candidates:
        raise MotionRefineError(f"{r}: no stereo scene found (im0.png/im1.png/disp0.pfm or *_left.png/*_right.png/*_disp.npz)")
    for scene in _select(sorted(candidates), scenes, r):
        yield read_middlebury_stereo_pair(*candidates[scene], name=scene)


# --------------------------------------------------------------------------- Middlebury flow


_MIDDLEBURY_IMAGE_DIRS = ("other-gray-twoframes", "other-data-gray", "other-color-twoframes", "other-data")


def read_middlebury_flow(root, scenes: Iterable[str] | None = None) -> Iterator[FlowScene]:
    """Middlebury flow scenes (frame10.png, frame11.png, flow10.flo).

    Either everything in one folder per scene (``root/{scene}/``), or the official split
    layout ``root/other-gt-flow/{scene}/flow10.flo`` with the frames under
    ``root/other-gray-twoframes/{scene}/`` (or other-data-gray / other-color-twoframes /
    other-data). Grey frames are replicated to RGB; |flow| > 1e9 (unknown) is invalid.
    """
    r = Path(root)
    if not r.is_dir():
        raise AssetMissingError(f"Middlebury flow folder not found: {r}")
    if (r / "other-gt-flow").is_dir():
        gt_root = r / "other-gt-flow"
        img_root = next((r / d for d in _MIDDLEBURY_IMAGE_DIRS if (r / d).is_dir()), None)
        if img_root is None:
            raise AssetMissingError(f"{r}: none of {_MIDDLEBURY_IMAGE_DIRS} found beside other-gt-flow")
    else:
        gt_root = img_root = r
    available = sorted(d.name for d in gt_root.iterdir() if (d / "flow10.flo").is_file())
    if not available:
        raise MotionRefineError(f"{gt_root}: no scene folder with flow10.flo")
    for scene in _select(available, scenes, gt_root):
        frames = np.stack([read_rgb(img_root / scene / "frame10.png"), read_rgb(img_root / scene / "frame11.png")])
        flo = read_flo(gt_root / scene / "flow10.flo")
        if flo.shape[:2] != frames.shape[1:3]:
            raise MotionRefineError(f"{gt_root / scene / 'flow10.flo'}: size {flo.shape[:2]} != frames {frames.shape[1:3]}")
        ok = flow_valid_mask(flo)
        flow = np.where(ok[..., None], flo, 0.0).astype(np.float32)
        yield FlowScene(scene, frames, flow[None], ok[None], None, meta={"benchmark": "middlebury_flow"})


# --------------------------------------------------------------------------- TAP-Vid


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (T, H, W, 3) uint8 to ``size`` = (height, width).

    Area averaging when shrinking (avoids aliasing), bilinear when enlarging. The official
    code uses mediapy's resampler, so pixel values differ slightly; point coordinates do not.
    """
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    shrink = h <= frames.shape[1] and w <= frames.shape[2]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])


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


# --------------------------------------------------------------------------- registry


BENCHMARKS: dict[str, Callable[..., Iterator]] = {
    "sintel": read_sintel,
    "kitti2015": read_kitti2015,
    "middlebury_stereo": read_middlebury_stereo,
    "middlebury_flow": read_middlebury_flow,
    "tapvid_davis": read_tapvid,
    "tapvid_kinetics": read_tapvid,
}


def iter_benchmark(name: str, root, **options) -> Iterator[FlowScene | TrackScene]:
    """Scenes of benchmark ``name`` (a key of :data:`BENCHMARKS`) read from ``root``."""
    try:
        reader = BENCHMARKS[name]
    except KeyError:
        raise MotionRefineError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}") from None
    return reader(root, **options)
