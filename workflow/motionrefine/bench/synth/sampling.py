"""Sampling primitives on pixel grids (centres at integers): bilinear interpolation,
homographies on points, smooth noise fields and their exact Lipschitz constant."""

from __future__ import annotations

import math

import cv2
import numpy as np


def bilinear(grid: np.ndarray, x: np.ndarray, y: np.ndarray, mode: str = "clamp",
              with_grad: bool = False):
    """Sample ``grid`` (h, w, C) at continuous pixel coordinates (x, y), pixel centres at integers.

    mode "clamp" extends the grid by its border values (so the interpolant stays
    Lipschitz with the same constant), "reflect" mirrors it about the border pixel
    centres. With ``with_grad`` also returns d/dx and d/dy of the interpolant ("clamp"
    only; zero across a clamped axis).
    """
    h, w, c = grid.shape
    if mode == "reflect":
        xs, ys = _reflect(x, w), _reflect(y, h)
    else:
        xs, ys = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    x0 = np.minimum(np.floor(xs).astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(np.floor(ys).astype(np.int64), max(h - 2, 0))
    fx = (xs - x0)[:, None].astype(grid.dtype)
    fy = (ys - y0)[:, None].astype(grid.dtype)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    flat = grid.reshape(-1, c)
    g00, g01 = flat[y0 * w + x0], flat[y0 * w + x1]
    g10, g11 = flat[y1 * w + x0], flat[y1 * w + x1]
    top = g00 + fx * (g01 - g00)
    bot = g10 + fx * (g11 - g10)
    val = top + fy * (bot - top)
    if not with_grad:
        return val
    inx = ((x > 0) & (x < w - 1))[:, None]
    iny = ((y > 0) & (y < h - 1))[:, None]
    dx = np.where(inx, (g01 - g00) + fy * ((g11 - g10) - (g01 - g00)), 0.0)
    dy = np.where(iny, bot - top, 0.0)
    return val, dx, dy


def _reflect(x: np.ndarray, n: int) -> np.ndarray:
    """Mirror coordinates into [0, n-1] (reflect-101, continuous and piecewise linear)."""
    if n == 1:
        return np.zeros_like(x)
    period = 2.0 * (n - 1)
    m = np.mod(x, period)
    return np.where(m > n - 1, period - m, m)


def apply_h(mat: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 3x3 homography to (n, 2) points."""
    q = pts @ mat[:2, :2].T + mat[:2, 2]
    wgt = pts @ mat[2, :2] + mat[2, 2]
    return q / wgt[:, None]


def smooth_noise_field(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """(h, w, 2) float64 Gaussian-smoothed white noise, unit peak magnitude."""
    noise = rng.standard_normal((h, w, 2))
    out = np.empty_like(noise)
    k = int(2 * math.ceil(3 * sigma) + 1)
    for c in range(2):
        # Reflect border: no artificial decay of the field at the texture border.
        out[..., c] = cv2.GaussianBlur(noise[..., c], (k, k), sigmaX=sigma, sigmaY=sigma,
                                       borderType=cv2.BORDER_REFLECT_101)
    peak = np.sqrt((out ** 2).sum(-1)).max()
    return out / max(peak, 1e-12)


def lipschitz(field_: np.ndarray) -> float:
    """Exact Lipschitz constant (spectral norm) of the bilinear interpolant of a (h, w, 2) field.

    In a cell d/dx varies linearly between the cell's top and bottom edge differences
    and d/dy between its left and right ones, and the spectral norm is convex, so the
    maximum is at one of the four (edge, edge) combinations.
    """
    if field_.shape[0] < 2 or field_.shape[1] < 2:
        return 0.0
    dx = field_[:, 1:] - field_[:, :-1]          # (h, w-1, 2)
    dy = field_[1:] - field_[:-1]                # (h-1, w, 2)
    best = 0.0
    for dxe in (dx[:-1], dx[1:]):                # top / bottom edge of each cell
        for dye in (dy[:, :-1], dy[:, 1:]):      # left / right edge
            a, c = dxe[..., 0], dxe[..., 1]      # column d/dx = (a, c)
            b, d = dye[..., 0], dye[..., 1]      # column d/dy = (b, d)
            # Largest singular value of [[a, b], [c, d]] in closed form.
            s1 = a * a + b * b + c * c + d * d
            s2 = np.sqrt(np.maximum(s1 * s1 - 4 * (a * d - b * c) ** 2, 0.0))
            best = max(best, float(np.sqrt(0.5 * (s1 + s2)).max()))
    return best
