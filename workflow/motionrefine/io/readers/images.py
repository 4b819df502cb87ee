"""Image files of the benchmarks as RGB frames and binary masks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from motionrefine.core.errors import AssetMissingError, MotionRefineError


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


def read_mask(path) -> np.ndarray:
    """Binary PNG mask (any channel count): True where the pixel is bright (> 127)."""
    p = Path(path)
    img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise MotionRefineError(f"{p}: cannot be decoded as a mask image")
    if img.ndim == 3:
        img = img.max(axis=2)
    threshold = 127 if img.dtype == np.uint8 else (np.iinfo(img.dtype).max // 2 if img.dtype.kind == "u" else 0.5)
    return img > threshold
