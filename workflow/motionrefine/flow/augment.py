"""Per-sample augmentation of a training pair and its sparse flow label.

Follows the official refinement recipe: colour jitter (brightness/contrast/saturation 0.4,
hue 0.5/π), the same jitter for both frames except with probability 0.2 (then independent
per frame), horizontal flip p=0.5, vertical flip p=0.1, random crop. No scaling or rotation.

Layouts: numpy inputs are channel-last — images (H, W, 3), flow (H, W, 2); torch inputs
are channel-first — (3, H, W), (2, H, W). ``valid`` and ``weight`` are (H, W) in both.
Outputs come back in the input's kind and layout; images as float32 in 0–255 (jitter makes
them non-integer), flow float32, valid bool, weight float32.

Crop size: a crop dimension larger than the image is reduced to the largest multiple of 8
that fits (RAFT needs multiples of 8), so small videos still train, at their own size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

from motionrefine.core.errors import MotionRefineError
from motionrefine.core.mapping import from_mapping

_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class AugmentConfig:
    crop: tuple[int, int] = (256, 512)  # (height, width), multiples of 8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.5 / math.pi
    asymmetric_prob: float = 0.2
    hflip_prob: float = 0.5
    vflip_prob: float = 0.1
    no_aug: bool = False  # ablation: no jitter, no flips (the crop stays: batches need one size)
    random_crop: bool = True  # False: centre crop

    def __post_init__(self):
        self.crop = tuple(int(c) for c in self.crop)
        if len(self.crop) != 2 or any(c <= 0 or c % 8 for c in self.crop):
            raise MotionRefineError(f"crop must be two positive multiples of 8 (height, width), got {self.crop}")
        if not 0 <= self.hue <= 0.5:
            raise MotionRefineError(f"hue jitter must be in [0, 0.5], got {self.hue}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "AugmentConfig":
        return from_mapping(cls, d, "augmentation")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["crop"] = list(self.crop)
        return d


def crop_size(height: int, width: int, crop: tuple[int, int]) -> tuple[int, int]:
    """Effective crop (h, w): the configured size, or the largest multiple of 8 that fits."""
    ch = min(crop[0], height // 8 * 8)
    cw = min(crop[1], width // 8 * 8)
    if ch == 0 or cw == 0:
        raise MotionRefineError(f"image {height}x{width} is smaller than 8 pixels in some dimension")
    return ch, cw


def origin_weights(weight: np.ndarray, crop: tuple[int, int], floor: float = 0.1) -> np.ndarray:
    """Probabilities over every crop origin (y0, x0) of an (H, W) weight map, flattened row-major:
    the weight each crop holds plus ``floor`` × the mean over crops, so that crops without
    weight stay possible and the draw never settles on one window."""
    ch, cw = crop
    s = np.zeros((weight.shape[0] + 1, weight.shape[1] + 1), np.float64)
    s[1:, 1:] = np.cumsum(np.cumsum(np.asarray(weight, np.float64), 0), 1)
    mass = np.maximum(s[ch:, cw:] - s[:-ch, cw:] - s[ch:, :-cw] + s[:-ch, :-cw], 0.0)
    mean = mass.mean()
    p = mass + floor * (mean if mean > 0 else 1.0)
    return (p / p.sum()).ravel()


# ------------------------------------------------------------------ colour jitter (float RGB in [0, 1])

def jitter_params(cfg: AugmentConfig, rng: np.random.Generator) -> list[tuple[str, float]]:
    """Random factors and a random order, like torchvision's ColorJitter."""
    ops = [
        ("brightness", rng.uniform(max(0.0, 1 - cfg.brightness), 1 + cfg.brightness)),
        ("contrast", rng.uniform(max(0.0, 1 - cfg.contrast), 1 + cfg.contrast)),
        ("saturation", rng.uniform(max(0.0, 1 - cfg.saturation), 1 + cfg.saturation)),
        ("hue", rng.uniform(-cfg.hue, cfg.hue)),
    ]
    return [ops[i] for i in rng.permutation(len(ops))]


def apply_jitter(img: np.ndarray, params: list[tuple[str, float]]) -> np.ndarray:
    """img: (H, W, 3) float32 RGB in [0, 1]; returns the same, clipped to [0, 1] after each op."""
    out = img.astype(np.float32, copy=True)
    for name, f in params:
        if name == "brightness":
            out = out * f
        elif name == "contrast":
            # Blend towards the mean grey level of the whole image.
            out = out * f + float((out @ _GREY).mean()) * (1 - f)
        elif name == "saturation":
            out = out * f + (out @ _GREY)[..., None] * (1 - f)
        elif name == "hue":
            if f == 0:
                continue
            hsv = cv2.cvtColor(np.clip(out, 0, 1), cv2.COLOR_RGB2HSV)  # float: H in degrees [0, 360)
            hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * f, 360.0)
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        out = np.clip(out, 0.0, 1.0)
    return out


def colour_jitter(img1: np.ndarray, img2: np.ndarray, cfg: AugmentConfig,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) 0–255 frames → jittered float32 0–255. Symmetric jitter treats the two
    frames as one image (one contrast mean), so photometric relations between them survive."""
    a = img1.astype(np.float32) / 255.0
    b = img2.astype(np.float32) / 255.0
    if rng.random() < cfg.asymmetric_prob:
        a = apply_jitter(a, jitter_params(cfg, rng))
        b = apply_jitter(b, jitter_params(cfg, rng))
    else:
        both = apply_jitter(np.concatenate([a, b], axis=0), jitter_params(cfg, rng))
        a, b = both[: a.shape[0]], both[a.shape[0]:]
    return a * 255.0, b * 255.0


# ------------------------------------------------------------------ geometry

def hflip(img1, img2, flow, *masks):
    """Mirror left-right; the horizontal flow component changes sign."""
    flow = flow[:, ::-1] * np.array([-1.0, 1.0], dtype=np.float32)
    return (img1[:, ::-1], img2[:, ::-1], flow) + tuple(m[:, ::-1] for m in masks)


def vflip(img1, img2, flow, *masks):
    """Mirror top-bottom; the vertical flow component changes sign."""
    flow = flow[::-1] * np.array([1.0, -1.0], dtype=np.float32)
    return (img1[::-1], img2[::-1], flow) + tuple(m[::-1] for m in masks)


def _to_numpy(x, channels: bool):
    if isinstance(x, torch.Tensor):
        a = x.detach().cpu().numpy()
        return np.moveaxis(a, 0, -1) if channels else a
    return np.asarray(x)


def _back(x: np.ndarray, as_torch: bool, channels: bool):
    x = np.ascontiguousarray(x)
    if not as_torch:
        return x
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 0)) if channels else x)


def augment(img1, img2, flow, valid, weight=None, *, rng: np.random.Generator,
            config: AugmentConfig | None = None, keep_raw: bool = False, weighted_crop: bool = False) -> dict:
    """Augment one sample. Returns a dict with img1, img2, flow, valid (+ weight if given;
    + raw1, raw2 — the same crop and flips without colour jitter — if ``keep_raw``, which the
    photometric baseline uses because jitter breaks brightness constancy). ``weighted_crop``
    (with ``weight`` and a random crop): the crop's origin is drawn by the weight it holds
    (``origin_weights``) instead of uniformly."""
    cfg = config or AugmentConfig()
    as_torch = isinstance(img1, torch.Tensor)
    i1, i2 = _to_numpy(img1, True), _to_numpy(img2, True)
    fl = _to_numpy(flow, True).astype(np.float32)
    va = _to_numpy(valid, False).astype(bool)
    masks = [va]
    if weight is not None:
        masks.append(_to_numpy(weight, False).astype(np.float32))
    h, w = i1.shape[:2]
    if i2.shape != i1.shape or fl.shape != (h, w, 2) or va.shape != (h, w) or i1.shape[-1] != 3:
        raise MotionRefineError(
            f"augment: inconsistent shapes img1 {i1.shape}, img2 {i2.shape}, flow {fl.shape}, valid {va.shape}")

    r1, r2 = i1.astype(np.float32), i2.astype(np.float32)
    if not cfg.no_aug:
        j1, j2 = colour_jitter(i1, i2, cfg, rng)
    else:
        j1, j2 = r1, r2
    extra = [r1, r2] if keep_raw else []
    if not cfg.no_aug:
        if rng.random() < cfg.hflip_prob:
            j1, j2, fl, *rest = hflip(j1, j2, fl, *masks, *extra)
            masks, extra = rest[: len(masks)], rest[len(masks):]
        if rng.random() < cfg.vflip_prob:
            j1, j2, fl, *rest = vflip(j1, j2, fl, *masks, *extra)
            masks, extra = rest[: len(masks)], rest[len(masks):]

    ch, cw = crop_size(h, w, cfg.crop)
    if cfg.random_crop and weighted_crop and weight is not None:
        k = int(rng.choice((h - ch + 1) * (w - cw + 1), p=origin_weights(masks[1], (ch, cw))))
        y0, x0 = divmod(k, w - cw + 1)
    elif cfg.random_crop:
        y0 = int(rng.integers(0, h - ch + 1))
        x0 = int(rng.integers(0, w - cw + 1))
    else:
        y0, x0 = (h - ch) // 2, (w - cw) // 2
    sl = (slice(y0, y0 + ch), slice(x0, x0 + cw))
    out = {
        "img1": _back(j1[sl].astype(np.float32), as_torch, True),
        "img2": _back(j2[sl].astype(np.float32), as_torch, True),
        "flow": _back(fl[sl].astype(np.float32), as_torch, True),
        "valid": _back(masks[0][sl], as_torch, False),
        "crop_origin": (y0, x0),
    }
    if weight is not None:
        out["weight"] = _back(masks[1][sl], as_torch, False)
    if keep_raw:
        out["raw1"] = _back(extra[0][sl], as_torch, True)
        out["raw2"] = _back(extra[1][sl], as_torch, True)
    return out
