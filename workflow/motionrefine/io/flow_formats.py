"""Flow and disparity file formats used by the public benchmarks.

Every reader returns arrays in the project layout: flow is (H, W, 2) float32 with
channel 0 = u (x displacement) and channel 1 = v, row 0 at the top of the image.
Readers raise :class:`MotionRefineError` naming the file for anything malformed
(:class:`AssetMissingError` when the file is absent); writers are atomic (temporary
sibling, then rename) so an interrupted export never leaves a half file behind.

Formats:
- ``.flo`` (Middlebury / Sintel / FlyingChairs): float32 magic 202021.25, int32
  width, int32 height, then float32 (u, v) interleaved, row-major, little-endian.
  "Unknown" flow is stored as 1e10; anything with |component| > 1e9 is invalid.
- KITTI 2015 flow PNG: 16-bit, RGB = (u, v, valid), value = (x − 2^15) / 64.
  OpenCV reads channels as B, G, R, i.e. (valid, v, u).
- PFM (Middlebury 2014 disparity, FlyingThings flow): ``Pf`` (1 channel) or ``PF``
  (3 channels) header, width height, scale (negative = little-endian), float32
  rows stored bottom-to-top.
- ``.npy``: plain (H, W, 2) float32 export.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from motionrefine.core.errors import AssetMissingError, MotionRefineError

FLO_MAGIC = np.float32(202021.25)
# Middlebury marks unknown flow with 1e10; its tools treat |x| > 1e9 as unknown.
UNKNOWN_FLOW_THRESH = 1e9
KITTI_OFFSET = 2.0**15
KITTI_SCALE = 64.0


# --------------------------------------------------------------------------- helpers


def _existing(path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise AssetMissingError(f"flow/disparity file not found: {p}")
    return p


@contextlib.contextmanager
def _atomic_path(path) -> Iterator[Path]:
    """Yield a temporary sibling path (same suffix, so cv2 picks the right codec) and
    rename it onto ``path`` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.tmp-{os.getpid()}{final.suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _as_flow(flow, what: str = "flow") -> np.ndarray:
    arr = np.asarray(flow.detach().cpu() if hasattr(flow, "detach") else flow)
    if arr.ndim != 3 or arr.shape[2] != 2:
        raise MotionRefineError(f"{what} must have shape (H, W, 2), got {arr.shape}")
    return arr.astype(np.float32, copy=False)


def flow_valid_mask(flow: np.ndarray) -> np.ndarray:
    """(H, W) bool: finite and not the Middlebury 'unknown' marker (|u| or |v| > 1e9)."""
    finite = np.isfinite(flow).all(axis=-1)
    with np.errstate(invalid="ignore"):
        small = (np.abs(flow) <= UNKNOWN_FLOW_THRESH).all(axis=-1)
    return finite & small


# --------------------------------------------------------------------------- .flo


def read_flo(path) -> np.ndarray:
    """Read a Middlebury ``.flo`` file into (H, W, 2) float32 (unknown values kept as stored)."""
    p = _existing(path)
    raw = p.read_bytes()
    if len(raw) < 12:
        raise MotionRefineError(f"{p}: too short for a .flo header ({len(raw)} bytes)")
    magic = np.frombuffer(raw, "<f4", count=1)[0]
    if magic != FLO_MAGIC:
        raise MotionRefineError(f"{p}: bad .flo magic {magic!r} (expected 202021.25); not a .flo file or wrong endianness")
    width, height = (int(v) for v in np.frombuffer(raw, "<i4", count=2, offset=4))
    # Bound the header before trusting it: a corrupt size must not trigger a huge allocation.
    if width <= 0 or height <= 0 or width > 100_000 or height > 100_000:
        raise MotionRefineError(f"{p}: implausible .flo size {width}x{height}")
    expected = 12 + 8 * width * height
    if len(raw) != expected:
        raise MotionRefineError(
            f"{p}: .flo header says {width}x{height} ({expected} bytes) but the file has {len(raw)} bytes"
        )
    data = np.frombuffer(raw, "<f4", count=2 * width * height, offset=12)
    return data.reshape(height, width, 2).astype(np.float32)


def write_flo(path, flow) -> None:
    """Write (H, W, 2) flow as a little-endian ``.flo`` file."""
    arr = _as_flow(flow)
    h, w, _ = arr.shape
    with _atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(np.array([FLO_MAGIC], "<f4").tobytes())
            f.write(np.array([w, h], "<i4").tobytes())
            f.write(np.ascontiguousarray(arr, dtype="<f4").tobytes())


# --------------------------------------------------------------------------- KITTI PNG


def read_kitti_flow(path) -> tuple[np.ndarray, np.ndarray]:
    """Read a KITTI 2015 16-bit flow PNG. Returns (flow (H, W, 2) float32, valid (H, W) bool).

    Invalid pixels get flow 0 so they cannot leak into a metric that forgets the mask.
    """
    p = _existing(path)
    img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise MotionRefineError(f"{p}: cannot be decoded as an image")
    if img.dtype != np.uint16 or img.ndim != 3 or img.shape[2] != 3:
        raise MotionRefineError(
            f"{p}: KITTI flow must be a 3-channel 16-bit PNG, got dtype {img.dtype} shape {img.shape}"
        )
    valid = img[..., 0] > 0  # cv2 order is B, G, R = (valid, v, u)
    flow = np.empty(img.shape[:2] + (2,), np.float32)
    flow[..., 0] = (img[..., 2].astype(np.float32) - KITTI_OFFSET) / KITTI_SCALE
    flow[..., 1] = (img[..., 1].astype(np.float32) - KITTI_OFFSET) / KITTI_SCALE
    flow[~valid] = 0.0
    return flow, valid


def write_kitti_flow(path, flow, valid=None) -> None:
    """Write flow as a KITTI 2015 16-bit PNG.

    Values are rounded to 1/64 px and clipped to the representable range
    [−512, 512) px, as the KITTI devkit does; ``valid`` defaults to finite pixels.
    """
    arr = _as_flow(flow)
    if Path(path).suffix.lower() != ".png":
        raise MotionRefineError(f"{path}: KITTI flow must be written as .png")
    ok = flow_valid_mask(arr) if valid is None else np.asarray(valid, bool) & np.isfinite(arr).all(-1)
    if ok.shape != arr.shape[:2]:
        raise MotionRefineError(f"valid mask shape {ok.shape} does not match flow {arr.shape[:2]}")
    clean = np.where(ok[..., None], arr, 0.0)
    enc = np.clip(np.round(clean * KITTI_SCALE + KITTI_OFFSET), 0, 65535).astype(np.uint16)
    bgr = np.stack([ok.astype(np.uint16), enc[..., 1], enc[..., 0]], axis=-1)
    with _atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), bgr):
            raise MotionRefineError(f"{path}: OpenCV failed to write the PNG")


# --------------------------------------------------------------------------- PFM


def read_pfm(path) -> np.ndarray:
    """Read a PFM file: (H, W) for ``Pf``, (H, W, 3) for ``PF``, float32, top row first."""
    p = _existing(path)
    raw = p.read_bytes()
    # Header is three whitespace-separated tokens lines: type, "W H", scale.
    lines = raw.split(b"\n", 3)
    if len(lines) < 4:
        raise MotionRefineError(f"{p}: truncated PFM header")
    kind = lines[0].strip()
    if kind not in (b"Pf", b"PF"):
        raise MotionRefineError(f"{p}: bad PFM magic {kind[:8]!r} (expected Pf or PF)")
    channels = 3 if kind == b"PF" else 1
    try:
        width, height = (int(t) for t in lines[1].split())
        scale = float(lines[2].strip())
    except ValueError as exc:
        raise MotionRefineError(f"{p}: malformed PFM header ({exc})") from None
    if width <= 0 or height <= 0 or scale == 0:
        raise MotionRefineError(f"{p}: invalid PFM header (size {width}x{height}, scale {scale})")
    dtype = "<f4" if scale < 0 else ">f4"
    body = lines[3]
    n = width * height * channels
    if len(body) != 4 * n:
        raise MotionRefineError(f"{p}: PFM header says {width}x{height}x{channels} but the data has {len(body)} bytes")
    data = np.frombuffer(body, dtype, count=n).astype(np.float32)
    shape = (height, width, channels) if channels == 3 else (height, width)
    return np.ascontiguousarray(np.flipud(data.reshape(shape)))  # PFM stores the bottom row first


def write_pfm(path, data) -> None:
    """Write (H, W) or (H, W, 3) float data as little-endian PFM (rows bottom-to-top)."""
    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim == 2:
        kind = b"Pf"
    elif arr.ndim == 3 and arr.shape[2] == 3:
        kind = b"PF"
    else:
        raise MotionRefineError(f"PFM data must be (H, W) or (H, W, 3), got {arr.shape}")
    h, w = arr.shape[:2]
    with _atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(kind + b"\n" + f"{w} {h}\n".encode() + b"-1.0\n")
            f.write(np.ascontiguousarray(np.flipud(arr), dtype="<f4").tobytes())


# --------------------------------------------------------------------------- .npy and dispatch


def write_npy(path, flow) -> None:
    """Export (H, W, 2) flow as float32 ``.npy``."""
    arr = _as_flow(flow)
    with _atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)


def read_npy_flow(path) -> np.ndarray:
    p = _existing(path)
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as exc:
        raise MotionRefineError(f"{p}: not a plain .npy array ({exc})") from None
    if arr.ndim != 3 or arr.shape[2] != 2:
        raise MotionRefineError(f"{p}: expected (H, W, 2) flow, got shape {arr.shape}")
    return arr.astype(np.float32, copy=False)


def read_flow(path) -> tuple[np.ndarray, np.ndarray]:
    """Read any supported flow file by extension. Returns (flow (H, W, 2), valid (H, W) bool).

    ``.flo``/``.npy``/``.pfm``: valid = finite and |component| <= 1e9 (invalid set to 0);
    ``.png``: KITTI encoding with its own valid channel. A 3-channel PFM (FlyingThings)
    keeps its first two channels.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".png":
        return read_kitti_flow(p)
    if ext == ".flo":
        flow = read_flo(p)
    elif ext == ".npy":
        flow = read_npy_flow(p)
    elif ext == ".pfm":
        data = read_pfm(p)
        if data.ndim != 3:
            raise MotionRefineError(f"{p}: single-channel PFM is disparity, not flow")
        flow = np.ascontiguousarray(data[..., :2])
    else:
        raise MotionRefineError(f"{p}: unknown flow file extension {ext!r} (expected .flo, .png, .npy, .pfm)")
    valid = flow_valid_mask(flow)
    flow = np.where(valid[..., None], flow, 0.0).astype(np.float32)
    return flow, valid


def write_flow(path, flow, valid=None) -> None:
    """Write flow by extension: ``.flo``, ``.png`` (KITTI), ``.npy``."""
    ext = Path(path).suffix.lower()
    if ext == ".png":
        write_kitti_flow(path, flow, valid)
        return
    arr = _as_flow(flow)
    if valid is not None:
        # .flo has an 'unknown' marker; .npy gets NaN so no one mistakes it for motion.
        marker = np.float32(1e10) if ext == ".flo" else np.float32(np.nan)
        arr = np.where(np.asarray(valid, bool)[..., None], arr, marker).astype(np.float32)
    if ext == ".flo":
        write_flo(path, arr)
    elif ext == ".npy":
        write_npy(path, arr)
    else:
        raise MotionRefineError(f"{path}: unknown flow file extension {ext!r} (expected .flo, .png, .npy)")


def read_disparity(path) -> np.ndarray:
    """Read a disparity map (H, W) float32, inf/NaN where unknown.

    ``.npz`` (``arr_0`` or the only array), ``.npy`` or ``.pfm`` (Middlebury 2014 ``disp0.pfm``).
    """
    p = _existing(path)
    ext = p.suffix.lower()
    if ext == ".pfm":
        d = read_pfm(p)
    elif ext in (".npz", ".npy"):
        try:
            loaded = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise MotionRefineError(f"{p}: cannot be read as a numpy file ({exc})") from None
        if ext == ".npz":
            with loaded:
                keys = list(loaded.files)
                key = "arr_0" if "arr_0" in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise MotionRefineError(f"{p}: no 'arr_0' among {keys}")
                d = loaded[key]
        else:
            d = loaded
    else:
        raise MotionRefineError(f"{p}: unknown disparity extension {ext!r} (expected .pfm, .npz, .npy)")
    if d.ndim != 2:
        raise MotionRefineError(f"{p}: disparity must be 2-D, got shape {d.shape}")
    return d.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- flow store export


# Export formats: name -> (writer, file suffix). KITTI's 16-bit PNG holds [-512, 512) px in 1/64 px steps.
EXPORT_FORMATS = {"flo": "flo", "npy": "npy", "kitti-png": "png"}
KITTI_RANGE = KITTI_OFFSET / KITTI_SCALE


def _kitti_export(path, flow: np.ndarray) -> int:
    """KITTI PNG of one flow field; pixels outside the encodable range are written invalid
    (not clipped to a wrong value). Returns how many."""
    valid = flow_valid_mask(flow)
    with np.errstate(invalid="ignore"):
        in_range = (np.abs(flow) < KITTI_RANGE).all(axis=-1)
    write_kitti_flow(path, flow, valid & in_range)
    return int((valid & ~in_range).sum())


def rescale_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Flow (H, W, 2) resampled to ``size`` = (width, height), its vectors scaled by the same
    factors, so it is the flow of the frames at that size (bilinear; NaN stays invalid nearby)."""
    h, w = flow.shape[:2]
    tw, th = size
    if (tw, th) == (w, h):
        return flow
    out = cv2.resize(np.ascontiguousarray(flow, np.float32), (tw, th), interpolation=cv2.INTER_LINEAR)
    return out * np.array([tw / w, th / h], np.float32)


def export_flow_store(store_path, out_dir, fmt: str = "flo", size: tuple[int, int] | None = None,
                      frame_indices: list[int] | None = None) -> int:
    """Write every pair of a flow store as files: ``fw_000000.flo`` (frame t -> t+1) and
    ``bw_000000.flo`` (t+1 -> t); ``fmt`` is one of :data:`EXPORT_FORMATS` (``kitti-png``
    writes ``fw_000000.png``). ``size`` (width, height): resample each field to it
    (:func:`rescale_flow`, e.g. the source video's resolution); ``frame_indices``: number the
    files by the source frame index of each pair's first frame instead of the stored pair
    index. The folder appears only when complete. Returns the file count."""
    import logging

    from motionrefine.core.store import atomic_dir, open_group

    if fmt not in EXPORT_FORMATS:
        raise MotionRefineError(f"unknown export format {fmt!r} (expected one of {sorted(EXPORT_FORMATS)})")
    suffix = EXPORT_FORMATS[fmt]
    g = open_group(store_path)
    out = Path(out_dir)
    n = clipped = 0
    with atomic_dir(out) as tmp:
        for key, tag in (("flow_fw", "fw"), ("flow_bw", "bw")):
            arr = g[key]
            for t in range(arr.shape[0]):
                flow = np.asarray(arr[t], np.float32)
                if size is not None:
                    flow = rescale_flow(flow, size)
                path = tmp / f"{tag}_{t if frame_indices is None else frame_indices[t]:06d}.{suffix}"
                if fmt == "kitti-png":
                    clipped += _kitti_export(path, flow)
                elif fmt == "flo":
                    write_flo(path, flow)
                else:
                    write_npy(path, flow)
                n += 1
    if clipped:
        logging.getLogger("motionrefine").warning(
            "%s: %d pixels move %g px or more, beyond KITTI's 16-bit range: written as invalid", out, clipped,
            KITTI_RANGE)
    return n
