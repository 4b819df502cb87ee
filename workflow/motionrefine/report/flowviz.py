"""Middlebury colour-wheel visualisation of optical flow (Baker et al., IJCV 2011).

Direction is hue, magnitude is saturation: zero flow is white, flow of the normalising
magnitude is the fully saturated wheel colour, and anything beyond it is darkened so
saturated regions stand out. Image convention: +u is right, +v is down; on the wheel
right is red, down is yellow, left is cyan/blue, up is violet.
"""

from __future__ import annotations

import numpy as np

# Hue segments of the wheel, in order, with their number of steps (the Middlebury values,
# chosen so perceptually similar hues get fewer steps). Each ramps one channel.
_SEGMENTS = (
    ("RY", 15),  # red -> yellow: green rises
    ("YG", 6),  # yellow -> green: red falls
    ("GC", 4),  # green -> cyan: blue rises
    ("CB", 11),  # cyan -> blue: green falls
    ("BM", 13),  # blue -> magenta: red rises
    ("MR", 6),  # magenta -> red: blue falls
)
# (channel that changes, rising?, channels held at 255) per segment.
_RAMPS = {"RY": (1, True, (0,)), "YG": (0, False, (1,)), "GC": (2, True, (1,)),
          "CB": (1, False, (2,)), "BM": (0, True, (2,)), "MR": (2, False, (0,))}


def colour_wheel() -> np.ndarray:
    """The (55, 3) float wheel in [0, 1], starting at pure red."""
    rows = []
    for name, n in _SEGMENTS:
        channel, rising, full = _RAMPS[name]
        seg = np.zeros((n, 3))
        ramp = np.floor(255.0 * np.arange(n) / n)
        seg[:, channel] = ramp if rising else 255.0 - ramp
        for c in full:
            seg[:, c] = 255.0
        rows.append(seg)
    return np.concatenate(rows) / 255.0


_WHEEL = colour_wheel()


def robust_max(*flows: np.ndarray, percentile: float = 99.0, floor: float = 1.0) -> float:
    """A magnitude that a few outlier pixels cannot dominate, shared by several flows so
    their colours compare (the same colour means the same motion in each)."""
    mags = [np.linalg.norm(np.asarray(f, np.float64), axis=-1).ravel() for f in flows if f is not None]
    mags = np.concatenate(mags) if mags else np.zeros(0)
    mags = mags[np.isfinite(mags)]
    if mags.size == 0:
        return float(floor)
    # The floor keeps near-static scenes from blowing sub-pixel noise up to full colour.
    return float(max(np.percentile(mags, percentile), floor))


def flow_to_rgb(flow: np.ndarray, max_mag: float | None = None) -> np.ndarray:
    """(H, W, 2) flow (u, v in pixels) -> (H, W, 3) uint8 RGB on the Middlebury wheel.

    ``max_mag``: the magnitude shown fully saturated (default: :func:`robust_max` of this
    flow). Non-finite flow is drawn black.
    """
    f = np.asarray(flow, np.float64)
    if f.ndim != 3 or f.shape[-1] != 2:
        raise ValueError(f"flow must be (H, W, 2), got {f.shape}")
    bad = ~np.isfinite(f).all(-1)
    f = np.where(bad[..., None], 0.0, f)
    scale = robust_max(f) if max_mag is None else float(max_mag)
    scale = scale if scale > 0 else 1.0
    u, v = f[..., 0] / scale, f[..., 1] / scale
    rad = np.sqrt(u * u + v * v)
    n = len(_WHEEL)
    # Angle measured so +u lands at the start of the wheel (red); the wheel is treated as a
    # closed loop, so hue is continuous all the way round.
    pos = (np.arctan2(-v, -u) / np.pi + 1.0) / 2.0 * n
    k0 = np.floor(pos).astype(np.int64) % n
    k1 = (k0 + 1) % n
    t = (pos - np.floor(pos))[..., None]
    col = (1.0 - t) * _WHEEL[k0] + t * _WHEEL[k1]
    inside = (rad <= 1.0)[..., None]
    # Inside the unit disc blend towards white with the magnitude; outside, darken.
    col = np.where(inside, 1.0 - rad[..., None] * (1.0 - col), col * 0.75)
    col[bad] = 0.0
    return np.clip(np.round(col * 255.0), 0, 255).astype(np.uint8)


def wheel_legend(size: int = 64) -> np.ndarray:
    """A (size, size, 3) uint8 key: the colour of every flow direction and magnitude up to 1."""
    r = np.linspace(-1.0, 1.0, size)
    u, v = np.meshgrid(r, r)  # image rows go down, as +v does
    img = flow_to_rgb(np.stack([u, v], -1), max_mag=1.0)
    img[np.hypot(u, v) > 1.0] = 255
    return img
