"""A preview video of one video's motion: its frames with the tracks drawn, beside the flow colour.

Each output frame t is two panels side by side:
- left: frame t with every track's last ``TAIL`` positions as a line and its position at t
  as a dot, filled where the point is visible, a hollow ring where it is occluded; one
  colour per track (hues spread over the tracks), points with NaN coordinates not drawn;
- right: the flow of the pair (t, t+1) on the Middlebury wheel (``report.flowviz``), one
  colour scale for the whole video so the same colour is the same motion in every frame.
  The last frame starts no pair: its flow panel is black.
Without flow the right panel is left out; without tracks the left panel is the plain frame.

Written with PyAV as MP4 that any player opens: H.264 (the first software H.264 encoder
FFmpeg has, libx264 normally), yuv420p, width and height padded to even numbers with black
at the right and bottom (yuv420p halves the chroma resolution), ``+faststart`` so browsers
play it while it loads. Only an FFmpeg without any H.264 encoder gets MPEG-4 part 2
(logged as a warning). Atomic: written to a temporary file and renamed; a failure leaves
no file.
"""

from __future__ import annotations

import functools
import logging
import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import write_atomic
from motionrefine.report.flowviz import flow_to_rgb, robust_max

log = logging.getLogger("motionrefine")

TAIL = 8                 # recent positions drawn behind each point
DEFAULT_FPS = 10.0       # when the frames store does not know its rate (image folders)
# Software H.264 encoders first: a hardware one (nvenc, vaapi) may be listed but fail to open.
H264_ENCODERS = ("libx264", "libopenh264", "h264")
FALLBACK_ENCODER = "mpeg4"


@functools.lru_cache(maxsize=None)
def _opens(name: str) -> bool:
    """Whether FFmpeg has encoder ``name`` and it opens for a small yuv420p stream."""
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt = 64, 64, "yuv420p"
        ctx.time_base = Fraction(1, 10)
        ctx.open()
        return True
    except (av.FFmpegError, ValueError, av.codec.codec.UnknownCodecError):
        return False


def pick_encoder(candidates: tuple[str, ...] | None = None) -> str:
    """The first H.264 encoder of ``candidates`` (default :data:`H264_ENCODERS`) that opens,
    else MPEG-4 part 2 (with a warning)."""
    candidates = H264_ENCODERS if candidates is None else candidates
    for name in candidates:
        if _opens(name):
            return name
    if _opens(FALLBACK_ENCODER):
        log.warning("no H.264 encoder in this FFmpeg (tried %s); writing the preview as MPEG-4 part 2 (%s)",
                    ", ".join(candidates), FALLBACK_ENCODER)
        return FALLBACK_ENCODER
    raise MotionRefineError(f"this FFmpeg has no video encoder for the preview (tried {', '.join(candidates)}, "
                            f"{FALLBACK_ENCODER})")


def store_fps(attrs) -> float | None:
    """Frames per second of a frames store (``io.video``): the source's rate over the stride;
    None when unknown (an image folder)."""
    fps = attrs.get("fps")
    if not fps:
        return None
    return float(fps) / max(1, int(attrs.get("stride") or 1))


def _check(out_path, frames, flow, tracks, visible) -> None:
    """One error naming the file and every shape when the inputs do not fit together."""
    shapes = (f"frames {getattr(frames, 'shape', None)}, flow {getattr(flow, 'shape', None)}, "
              f"tracks {getattr(tracks, 'shape', None)}, visible {getattr(visible, 'shape', None)}")
    problems = []
    fs = getattr(frames, "shape", ())
    if len(fs) != 4 or fs[-1] != 3 or fs[0] < 1 or getattr(frames, "dtype", None) != np.uint8:
        problems.append("frames must be (T, H, W, 3) uint8 with T >= 1")
    else:
        T, H, W = fs[:3]
        if flow is not None and tuple(getattr(flow, "shape", ())) != (T - 1, H, W, 2):
            problems.append(f"flow must be (T-1, H, W, 2) = ({T - 1}, {H}, {W}, 2)")
        if tracks is not None:
            ts = tuple(getattr(tracks, "shape", ()))
            if len(ts) != 3 or ts[1:] != (T, 2):
                problems.append(f"tracks must be (N, T, 2) with T = {T}")
            elif visible is not None and tuple(getattr(visible, "shape", ())) != ts[:2]:
                problems.append(f"visible must be (N, T) = {ts[:2]}")
        elif visible is not None:
            problems.append("visible given without tracks")
    if problems:
        raise MotionRefineError(f"{out_path}: cannot write the preview: {'; '.join(problems)} (got {shapes})")


def track_colours(n: int) -> np.ndarray:
    """(n, 3) uint8 RGB, hues spread evenly so neighbouring tracks differ."""
    hsv = np.zeros((max(n, 1), 1, 3), np.uint8)
    hsv[:, 0, 0] = (np.arange(max(n, 1)) * 180 // max(n, 1)).astype(np.uint8)  # OpenCV hue is 0..179
    hsv[:, 0, 1:] = 255
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[:n, 0]


_SHIFT = 4  # OpenCV's fixed-point drawing: coordinates × 16, for sub-pixel positions


def _fixed(xy: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(xy, np.float64) * (1 << _SHIFT)).astype(np.int32)


def draw_tracks(image: np.ndarray, tracks: np.ndarray, visible: np.ndarray, t: int, colours: np.ndarray,
                tail: int = TAIL) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) with the tracks' tails up to frame t and their dots at t."""
    out = np.ascontiguousarray(image).copy()
    h, w = out.shape[:2]
    radius = max(3, round(min(h, w) / 60))
    lo = max(0, t - tail)
    for i in range(len(tracks)):
        colour = tuple(int(c) for c in colours[i])
        seg = tracks[i, lo:t + 1]
        # Clipped far outside the frame (OpenCV clips the rest), so fixed-point coordinates stay int32.
        seg = np.clip(seg[np.isfinite(seg).all(-1)], -4 * max(h, w), 4 * max(h, w))
        if len(seg) >= 2:
            cv2.polylines(out, [_fixed(seg)], False, colour, 1, cv2.LINE_AA, _SHIFT)
        p = tracks[i, t]
        if np.isfinite(p).all() and abs(p[0]) < 4 * w and abs(p[1]) < 4 * h:  # a dot far outside shows nothing
            filled = bool(visible[i, t])
            centre = tuple(int(v) for v in _fixed(p))
            cv2.circle(out, centre, radius << _SHIFT, colour, -1 if filled else 1, cv2.LINE_AA, _SHIFT)
    return out


def _flow_scale(flow) -> float:
    """One magnitude scale for the video: robust max over up to 16 pairs, every 4th pixel."""
    n = flow.shape[0]
    picks = np.unique(np.linspace(0, n - 1, min(16, n)).round().astype(int))
    return robust_max(*(np.asarray(flow[int(i)])[::4, ::4] for i in picks))


def compose(frames, flow, tracks, visible, t: int, colours, scale: float | None) -> np.ndarray:
    """Output frame t (before padding): the tracks panel, and the flow panel beside it when flow is given."""
    frame = np.asarray(frames[t])
    left = frame if tracks is None else draw_tracks(frame, tracks, visible, t, colours)
    if flow is None:
        return left
    if t < flow.shape[0]:
        right = flow_to_rgb(np.asarray(flow[t]), max_mag=scale)
    else:
        right = np.zeros_like(frame)  # the last frame starts no pair
    return np.concatenate([left, right], axis=1)


def _encode(path: Path, frames, flow, tracks, visible, fps: float, codec: str) -> None:
    T, H, W = frames.shape[:3]
    width = W * (1 if flow is None else 2)
    ew, eh = width + width % 2, H + H % 2
    colours = track_colours(0 if tracks is None else len(tracks))
    scale = _flow_scale(flow) if flow is not None and flow.shape[0] else None
    rate = Fraction(fps).limit_denominator(1001)  # 29.97 stays 30000/1001
    with av.open(str(path), "w", format="mp4", container_options={"movflags": "+faststart"}) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = ew, eh, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "medium"}  # near-transparent: thin track lines survive
        else:
            stream.bit_rate = max(1_000_000, int(ew * eh * float(rate) * 0.5))
        for t in range(T):
            img = np.zeros((eh, ew, 3), np.uint8)
            img[:H, :width] = compose(frames, flow, tracks, visible, t, colours, scale)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts = t
            frame.time_base = 1 / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def write_preview(out_path: str | os.PathLike, frames, flow=None, tracks=None, visible=None,
                  fps: float | None = None) -> str:
    """Write the preview MP4 of frames (T, H, W, 3) uint8, flow (T−1, H, W, 2) (pair t = t → t+1,
    stored pixels) or None, tracks (N, T, 2) (x, y) px of the frames or None, visible (N, T)
    bool or None (then every point counts as visible), at ``fps`` (None: ``DEFAULT_FPS``; a
    frames store's rate is :func:`store_fps`). Arrays or Zarr arrays (read a frame at a time).
    Returns the encoder used. Raises MotionRefineError on shapes that do not fit; no file then."""
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".mp4":
        raise MotionRefineError(f"{out_path}: the preview is an MP4 file; name it *.mp4")
    _check(out_path, frames, flow, tracks, visible)
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise MotionRefineError(f"{out_path}: fps must be a positive number, got {fps!r}")
    fps = float(fps) if fps is not None else DEFAULT_FPS
    if tracks is not None:
        tracks = np.asarray(tracks, np.float64)
        visible = np.ones(tracks.shape[:2], bool) if visible is None else np.asarray(visible, bool)
    codec = pick_encoder()
    write_atomic(out_path, lambda tmp: _encode(tmp, frames, flow, tracks, visible, fps, codec), keep_suffix=True)
    log.info("%s: %d frames, %s, %.3g fps", out_path, frames.shape[0], codec, fps)
    return codec
