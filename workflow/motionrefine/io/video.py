"""Decode a video file or a folder of images into one Zarr v3 frame store.

The store holds ``frames`` (T, H, W, 3) uint8 RGB, one compressed chunk per frame,
plus provenance in the group attrs. Frames are streamed: only the selected range is
converted and resized, and at most one frame is held in memory at a time.

Videos are decoded with PyAV (FFmpeg), which counts and times the frames it decodes;
image folders are read with OpenCV.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from motionrefine import __version__
from motionrefine.core.errors import VideoError
from motionrefine.core.store import atomic_group, create_array, sha256_file

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
_RESIZE_RE = re.compile(r"^\s*(?:(\d+)\s*[xX]\s*(\d+)|(\d+))\s*$")


@dataclass(frozen=True)
class Resize:
    """Target size: exact ``width`` × ``height``, or the short side in pixels (aspect kept)."""

    width: int | None = None
    height: int | None = None
    short_side: int | None = None

    def target(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) to resize a ``width`` × ``height`` frame to."""
        if self.short_side is None:
            return self.width, self.height
        scale = self.short_side / min(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))

    def __str__(self) -> str:
        return str(self.short_side) if self.short_side is not None else f"{self.width}x{self.height}"


def parse_resize(spec) -> Resize | None:
    """``"WxH"`` → exact size, ``"N"`` / N → short side N px, empty/None → no resize."""
    if spec is None or (isinstance(spec, float) and math.isnan(spec)) or str(spec).strip() == "":
        return None
    m = _RESIZE_RE.match(str(spec))
    if not m:
        raise ValueError(f"resize must be 'WxH' or a short side in px, got {spec!r}")
    if m.group(3) is not None:
        short = int(m.group(3))
        if short < 1:
            raise ValueError(f"resize short side must be >= 1, got {spec!r}")
        return Resize(short_side=short)
    w, h = int(m.group(1)), int(m.group(2))
    if w < 1 or h < 1:
        raise ValueError(f"resize width and height must be >= 1, got {spec!r}")
    return Resize(width=w, height=h)


def natural_key(name: str):
    """Sort key so that frame_2 comes before frame_10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a frame folder in natural order; anything else is an error (hidden files are ignored)."""
    folder = Path(folder)
    files = []
    for entry in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if entry.name.startswith("."):
            continue  # .DS_Store and editor droppings are not frames
        if not entry.is_file() or entry.suffix.lower() not in IMAGE_SUFFIXES:
            raise VideoError(
                f"{entry}: not an image file in frame folder {folder} "
                f"(expected only {', '.join(sorted(IMAGE_SUFFIXES))}); move it out of the folder"
            )
        files.append(entry)
    return files


def source_fingerprint(path: str | os.PathLike, files: list[Path] | None = None) -> dict:
    """Size, mtime and a hash identifying the source, so a stored stack can be traced back to it."""
    path = Path(path)
    if path.is_dir():
        # Hashing every image would cost as much as decoding them; names+sizes+mtimes detect any change.
        h = hashlib.sha256()
        size, mtime = 0, 0.0
        for f in files if files is not None else list_frame_files(path):
            st = f.stat()
            size += st.st_size
            mtime = max(mtime, st.st_mtime)
            h.update(f"{f.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return {"source_size_bytes": size, "source_mtime": mtime, "source_listing_sha256": h.hexdigest()}
    st = path.stat()
    return {"source_size_bytes": st.st_size, "source_mtime": st.st_mtime, "source_sha256": sha256_file(path)}


# Frames-store attrs that identify what the frames are (source file and the selection from it).
_IDENTITY_KEYS = ("source_path", "source_kind", "source_size_bytes", "source_mtime", "source_sha256",
                  "source_listing_sha256", "frame_indices", "resize", "code_version")


def frames_source(attrs: dict) -> dict:
    """Identity of a frames store's input, for the provenance of stores made from it: the
    ``source`` dict of a benchmark-scene store, else the source file's fingerprint and selection."""
    if isinstance(attrs.get("source"), dict):
        return dict(attrs["source"])
    return {k: attrs[k] for k in _IDENTITY_KEYS if k in attrs}


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (T, H, W, 3) uint8 to ``size`` = (height, width).

    Area averaging when shrinking (avoids aliasing), bilinear when enlarging. TAP-Vid's
    official code uses mediapy's resampler, so pixel values differ slightly from its frames;
    point coordinates do not.
    """
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    shrink = h <= frames.shape[1] and w <= frames.shape[2]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])


def _resize(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (frame.shape[1], frame.shape[0]) == size:
        return frame
    shrinking = size[0] * size[1] < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _video_frames(path: Path, start: int, end: int | None, stride: int, info: dict) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (source index, RGB frame) of the selected range of a video file, decoded with PyAV.

    Indices and timestamps come from the decoded frames, never from the container header:
    AVI headers count frame slots, not frames (tree.avi's says 444, it holds 68).
    Sets ``info["fps"]`` (the stream's nominal rate) and appends each yielded frame's
    time in seconds to ``info["timestamps"]``.
    """
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError):
        raise VideoError(f"{path}: cannot open video (corrupt, truncated or unsupported container)") from None
    try:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream in the file (audio only, or not a video)")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        info["fps"] = float(rate) if rate else None
        header = stream.frames  # 0 when the container does not say
        index = 0
        decoded = container.decode(stream)
        while end is None or index < end:
            try:
                frame = next(decoded, None)
            except av.FFmpegError as exc:
                reason = getattr(exc, "strerror", None) or exc
                raise VideoError(f"{path}: frame {index} cannot be decoded (corrupt or truncated video): {reason}") from None
            if frame is None:
                break
            if index >= start and (index - start) % stride == 0:
                # Only selected frames pay for the colour conversion; rgb24 matches OpenCV's BGR->RGB
                # bit for bit on the sample videos (h264 yuv420p, cinepak).
                info["timestamps"].append(frame.time)
                yield index, frame.to_ndarray(format="rgb24")
            index += 1
        if end is not None and index < end:
            raise VideoError(
                f"{path}: video ends after {index} frames but end={end} was requested "
                "(truncated file, or end beyond the video's length)"
            )
        if end is None and header and header != index:
            # Only a read to the end knows the true count. A short count can also mean a cut file,
            # which a container without an index cannot tell apart: give `end` to make it an error.
            log.warning("%s: container header says %d frames, but the stream decodes to %d; using %d",
                        path, header, index, index)
    finally:
        container.close()


def _folder_frames(files: list[Path], start: int, end: int | None, stride: int, folder: Path) -> Iterator[tuple[int, np.ndarray]]:
    if end is not None and end > len(files):
        raise VideoError(f"{folder}: end={end} is beyond the {len(files)} frames in the folder")
    for index in range(start, len(files) if end is None else end, stride):
        f = files[index]
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            raise VideoError(f"{f}: cannot decode image (corrupt or not an image)")
        yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def extract_frames(
    source: str | os.PathLike,
    out_path: str | os.PathLike,
    start: int = 0,
    end: int | None = None,
    stride: int = 1,
    resize: Resize | str | int | None = None,
) -> dict:
    """Decode frames ``start, start+stride, … < end`` of ``source`` into ``out_path`` (Zarr v3).

    ``source`` is a video file or a folder of images (natural sort order). ``end`` is
    exclusive; None means up to the last frame. Returns the attrs written to the group.
    Raises VideoError naming the file for corrupt input, inconsistent frame sizes or
    fewer than two selected frames; nothing is left at ``out_path`` then.
    """
    source = Path(source)
    if not isinstance(resize, Resize):
        resize = parse_resize(resize)
    if start < 0 or stride < 1 or (end is not None and end <= start):
        raise VideoError(f"{source}: bad frame range start={start} end={end} stride={stride}")
    if not source.exists():
        raise VideoError(f"{source}: no such video file or frame folder")

    info: dict = {"timestamps": []}
    files = None
    if source.is_dir():
        files = list_frame_files(source)
        info["fps"] = None  # an image folder carries no frame rate, nor timestamps
        info["timestamps"] = None
        frames = _folder_frames(files, start, end, stride, source)
    else:
        frames = _video_frames(source, start, end, stride, info)

    indices: list[int] = []
    with atomic_group(out_path) as group:
        arr = None
        original = target = None
        for index, frame in frames:
            h, w = frame.shape[:2]
            if original is None:
                original = (w, h)
                target = resize.target(w, h) if resize else original
                arr = create_array(group, "frames", (0, target[1], target[0], 3), np.uint8,
                                   chunks=(1, target[1], target[0], 3))
            elif (w, h) != original:
                where = files[index] if files is not None else f"{source} frame {index}"
                raise VideoError(
                    f"{where}: frame size {w}x{h} differs from the first selected frame's {original[0]}x{original[1]}"
                )
            # Grow by one frame at a time: the container's frame count is unreliable (tree.avi reports 444, holds 68).
            arr.append(_resize(frame, target)[None], axis=0)
            indices.append(index)
        if len(indices) < 2:
            raise VideoError(
                f"{source}: {len(indices)} frame(s) selected (start={start} end={end} stride={stride}); "
                "at least 2 are needed for motion"
            )
        attrs = {
            "source_path": str(source.resolve()),
            "source_kind": "folder" if files is not None else "video",
            **source_fingerprint(source, files),
            "fps": info["fps"],
            "timestamps": info["timestamps"],
            "original_size": {"width": original[0], "height": original[1]},
            "stored_size": {"width": target[0], "height": target[1]},
            "frame_indices": indices,
            "start": start,
            "end": end,
            "stride": stride,
            "resize": str(resize) if resize else None,
            "code_version": __version__,
        }
        group.attrs.update(attrs)
        log.info("%s: %d frames %dx%d -> %dx%d written to %s", source, len(indices), *original, *target, out_path)
    return attrs
