"""Procedural synthetic sequences for pre-training the tracker (CPU-sized): the data source
of ``track.pretrain``.

Why procedural: the project refines on real videos, so the pre-training data must not
contain the real textures the tracker is later evaluated or refined on. Textures here are
made from numpy/cv2 alone (multi-scale value noise, stripes, rotated checkers, blurred random
shapes, colour gradients, blends of these, plus fine grain), which leaves a genuine
synthetic-to-real gap for the refinement to close.

Sequences are rendered by ``synth.render_sequence`` with these textures as its "sources":
moving, occluding layers over a homography-moving background, with exact tracks and
occlusion. Every training sequence is a pure function of (seed, step, slot), so a run that
resumes from a checkpoint sees exactly the data an uninterrupted run would.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from motionrefine.bench import synth
from motionrefine.core.errors import MotionRefineError

if TYPE_CHECKING:
    from motionrefine.track.pretrain import PretrainConfig

TEXTURE_KINDS = ("noise", "stripes", "checker", "shapes", "gradient")


# --------------------------------------------------------------------------- procedural textures

def _palette(rng: np.random.Generator, k: int) -> np.ndarray:
    """k random RGB colours (0–255), spread in hue and brightness so edges have contrast."""
    hsv = np.stack([rng.uniform(0, 180, k), rng.uniform(40, 255, k), rng.uniform(30, 255, k)], axis=1)
    rgb = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0]
    return rgb.astype(np.float32)


def _colourise(rng: np.random.Generator, v: np.ndarray) -> np.ndarray:
    """Map a scalar field (h, w) to RGB through a random piecewise-linear colour ramp."""
    v = (v - v.min()) / max(float(np.ptp(v)), 1e-6)
    k = int(rng.integers(2, 5))
    stops = np.sort(np.concatenate([[0.0, 1.0], rng.uniform(0, 1, k - 2)]))
    cols = _palette(rng, k)
    return np.stack([np.interp(v, stops, cols[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def _value_noise(rng: np.random.Generator, h: int, w: int, octaves: int, base: float, persistence: float) -> np.ndarray:
    """Sum of bicubically upsampled random grids at doubling frequencies (fractal value noise)."""
    out = np.zeros((h, w), np.float32)
    amp, cell = 1.0, base
    for _ in range(octaves):
        gh, gw = max(2, int(math.ceil(h / cell)) + 1), max(2, int(math.ceil(w / cell)) + 1)
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        amp *= persistence
        cell = max(1.0, cell / 2)
    return out


def _tex_noise(rng, h, w):
    return _colourise(rng, _value_noise(rng, h, w, int(rng.integers(3, 6)), rng.uniform(8, 64), rng.uniform(0.4, 0.8)))


def _tex_stripes(rng, h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    th = rng.uniform(0, np.pi)
    period = rng.uniform(4, 24)
    # A smooth warp bends the stripes, so they are not a pure 1-D (aperture-ambiguous) pattern.
    warp = _value_noise(rng, h, w, 2, rng.uniform(24, 64), 0.5) * rng.uniform(0, period)
    v = np.sin(2 * np.pi * ((x * math.cos(th) + y * math.sin(th)) + warp) / period)
    if rng.random() < 0.5:
        v = np.tanh(rng.uniform(2, 8) * v)  # sharper, square-ish stripes
    return _colourise(rng, v)


def _tex_checker(rng, h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    th = rng.uniform(0, np.pi / 2)
    s = rng.uniform(4, 20)
    u, v = x * math.cos(th) + y * math.sin(th), -x * math.sin(th) + y * math.cos(th)
    cells = (np.floor(u / s) + np.floor(v / s)).astype(np.int64) % 2
    cols = _palette(rng, 2)
    img = cols[cells]
    return cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.2))


def _tex_shapes(rng, h, w):
    img = np.empty((h, w, 3), np.float32)
    img[:] = _palette(rng, 1)[0]
    n = int(rng.integers(20, 80))
    cols = _palette(rng, n)
    scale = max(h, w)
    for i in range(n):
        c = tuple(float(v) for v in cols[i])
        kind = rng.integers(4)
        p = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        r = int(rng.uniform(0.01, 0.12) * scale) + 1
        if kind == 0:
            cv2.circle(img, p, r, c, -1, cv2.LINE_AA)
        elif kind == 1:
            q = (p[0] + int(rng.integers(-2 * r, 2 * r + 1)), p[1] + int(rng.integers(-2 * r, 2 * r + 1)))
            cv2.rectangle(img, p, q, c, -1, cv2.LINE_AA)
        elif kind == 2:
            cv2.ellipse(img, p, (r, max(1, r // 2)), float(rng.uniform(0, 180)), 0, 360, c, -1, cv2.LINE_AA)
        else:
            q = (p[0] + int(rng.integers(-3 * r, 3 * r + 1)), p[1] + int(rng.integers(-3 * r, 3 * r + 1)))
            cv2.line(img, p, q, c, int(rng.integers(1, 4)), cv2.LINE_AA)
    return cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 2.0))


def _tex_gradient(rng, h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:
        th = rng.uniform(0, 2 * np.pi)
        v = x * math.cos(th) + y * math.sin(th)
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        v = np.hypot(x - cx, y - cy)
    # Gradients alone are nearly textureless; mild noise keeps some (weak) trackable detail.
    v = v / max(float(np.ptp(v)), 1e-6) + 0.15 * _value_noise(rng, h, w, 4, rng.uniform(4, 16), 0.6)
    return _colourise(rng, v)


_MAKERS = {"noise": _tex_noise, "stripes": _tex_stripes, "checker": _tex_checker, "shapes": _tex_shapes,
           "gradient": _tex_gradient}


def procedural_texture(rng: np.random.Generator, height: int, width: int, kind: str | None = None,
                       blend_prob: float = 0.5, grain: tuple[float, float] = (1.0, 6.0)) -> np.ndarray:
    """(height, width, 3) uint8 RGB texture of ``kind`` (random if None); with ``blend_prob`` a
    second random kind is mixed in (alpha or multiplicative); then Gaussian grain of std in
    ``grain`` (8-bit levels)."""
    if kind is None:
        kind = TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]
    if kind not in _MAKERS:
        raise MotionRefineError(f"unknown texture kind {kind!r}; choose from {TEXTURE_KINDS}")
    img = _MAKERS[kind](rng, height, width)
    if rng.random() < blend_prob:
        other = _MAKERS[TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]](rng, height, width)
        if rng.random() < 0.5:
            a = rng.uniform(0.2, 0.6)
            img = (1 - a) * img + a * other
        else:
            img = img * (0.4 + 0.6 * other / 255.0)
    img = img + rng.standard_normal(img.shape).astype(np.float32) * rng.uniform(*grain)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- data

def synth_training_sequence(cfg: PretrainConfig, seed) -> synth.SynthSequence:
    """One training sequence, deterministic in ``seed`` (an int or a sequence of ints)."""
    rng = np.random.default_rng(seed)
    lo, hi = (cfg.layers, cfg.layers) if isinstance(cfg.layers, int) else cfg.layers
    n_src = int(hi) + 1
    # Sources a bit larger than the frame: render_sequence crops (and rescales) textures from them.
    th, tw = int(cfg.height * 1.5), int(cfg.width * 1.5)
    sources = [procedural_texture(rng, th, tw) for _ in range(n_src)]
    photo = None
    if rng.random() < cfg.photometric_prob:
        photo = dict(brightness=float(rng.uniform(0, 0.15)), contrast=float(rng.uniform(0, 0.1)),
                     noise=float(rng.uniform(0, 3)), blur=float(rng.uniform(0, 0.8)))
    nonrigid = cfg.nonrigid_amplitude * rng.uniform(0.3, 1.0) if rng.random() < cfg.nonrigid_prob else 0.0
    scfg = synth.make_config(
        "easy", height=cfg.height, width=cfg.width, frames=cfg.S, layers=cfg.layers,
        camera_motion=float(rng.uniform(0, cfg.camera_motion)), camera_rotation=float(rng.uniform(0, 0.5)),
        layer_speed=float(rng.uniform(0.3, 1.0) * cfg.layer_speed), layer_rotation=float(rng.uniform(0, 3)),
        nonrigid_amplitude=float(nonrigid), nonrigid_sigma=float(min(cfg.height, cfg.width) / 6),
        n_tracks=cfg.n_tracks, query_frames=(0,), seed=int(rng.integers(2**31 - 1)), photometric=photo)
    return synth.render_sequence(sources, scfg)


def _fixed_count(seq: synth.SynthSequence, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of exactly n tracks (repeats only if the renderer found fewer clean points)."""
    have = len(seq.tracks)
    if have == 0:
        raise MotionRefineError("a training sequence has no query points")
    return rng.permutation(have)[:n] if have >= n else rng.choice(have, size=n, replace=True)


def make_batch(cfg: PretrainConfig, step: int) -> dict:
    """Batch of ``step``: rgbs (B,S,3,H,W) 0–255, xys (B,N,2) at frame 0, trajs (B,S,N,2),
    vis (B,S,N) and valid (B,S,N) (inside the frame), all torch float32."""
    out = {k: [] for k in ("rgbs", "trajs", "vis", "valid")}
    for slot in range(cfg.batch_size):
        seed = [cfg.seed, step, slot]
        seq = synth_training_sequence(cfg, seed)
        idx = _fixed_count(seq, cfg.n_tracks, np.random.default_rng(seed + [1]))
        tr = seq.tracks[idx].transpose(1, 0, 2)  # (S, N, 2)
        inside = (tr[..., 0] >= 0) & (tr[..., 0] <= cfg.width - 1) & (tr[..., 1] >= 0) & (tr[..., 1] <= cfg.height - 1)
        out["rgbs"].append(seq.frames.transpose(0, 3, 1, 2))
        out["trajs"].append(tr)
        out["vis"].append(~seq.occluded[idx].T)
        out["valid"].append(inside)
    return {k: torch.from_numpy(np.stack(v).astype(np.float32)) for k, v in out.items()}
