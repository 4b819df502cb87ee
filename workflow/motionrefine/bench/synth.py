"""Real-texture benchmark scenes with exact ground-truth motion.

Real photographs supply the appearance; the motion is synthetic and therefore known
exactly. A scene is a stack of layers drawn back to front in a fixed order:

* layer 0, the background: one real frame seen through a smooth camera path (a
  homography per frame, drifting with small smooth random perturbations);
* layers 1..L: blobs with a soft alpha edge cut from other real frames, moving along
  smooth similarity or affine paths and occluding everything behind them.

Every layer ``l`` has a texture with its own pixel grid (centres at integers, like
``motionrefine.core.geometry``) and, per frame ``t``, an analytic forward map texture -> frame

    P_{l,t}(u) = A_{l,t} (u + D_{l,t}(u))        (A applied in homogeneous coordinates)

where ``A`` is the rigid part (homography for the background, affine for the blobs)
and ``D`` the non-rigid displacement, a smooth field defined *in texture space*. The
backward map M_{l,t} = P_{l,t}^{-1} (frame -> texture) inverts ``A`` exactly and
``u + D(u) = v`` by Newton iterations (with a fixed-point fallback). The field's
Lipschitz constant is capped below 1 (``max_strain``), so ``u -> u + D(u)`` is a
fold-free bijection and the solve is unique and converges.

Frames are rendered by backward mapping (sample the texture at M(x) for every frame
pixel x) and all ground truth comes from the same maps:

* owner of a frame point x: the front-most layer whose alpha at M(x) is >= 0.5;
* forward flow at x of frame t: P_{l,t+1}(M_{l,t}(x)) - x for the owner l, backward
  flow likewise from t+1 to t;
* occlusion (pair t -> t+1): the surface at x is not the owner at x + flow in frame
  t+1, i.e. a layer in front of it covers that point (alpha >= 0.5 there), or x + flow
  lies outside [0, W-1] x [0, H-1] (the same test as ``geometry.inside_frame``);
* tracks (TAP-Vid layout): query points at query frames follow their texture point
  through all frames via P; a point is occluded where a front layer covers it or it
  is outside the frame.

Non-rigid amplitude, defined: ``nonrigid_amplitude`` (px) is the peak, over texture
points and consecutive frame pairs, of the magnitude of the frame-to-frame change of
the non-rigid displacement, max |D_{t+1}(u) - D_t(u)|. The field rotates between two
independent Gaussian-smoothed noise fields, D_t = cos(w t + p) F_a + sin(w t + p) F_b
with w = 2 pi / ``nonrigid_period``; at the default period of 6 frames
2 sin(w/2) = 1, so the total deviation from the rest shape has the same peak scale as
the per-frame change. Texture px equal frame px up to the layer's scale (0.8-1.25).
If the requested amplitude at that ``nonrigid_sigma`` would fold the surface (field
Lipschitz constant >= ``max_strain``), the field is scaled down to ``max_strain`` and
the amplitude actually used is reported in ``SynthSequence.info`` (``layers[i]
["nonrigid_amplitude"]``).

Photometric changes (brightness/contrast drift, blur, sensor noise, JPEG) are applied
to the rendered frames only; ``frames_clean`` keeps the frames before them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field as dc_field
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from motionrefine.core.errors import MotionRefineError
from motionrefine.core.geometry import backward_warp
from motionrefine.core.store import atomic_group, open_group, write_array

SYNTH_FORMAT_VERSION = 1

# Alpha thresholds: a point belongs to a layer at alpha >= 0.5; a pixel is "mixed"
# (its colour blends two surfaces) when any alpha involved is strictly inside (0, 1).
_OWN_ALPHA = 0.5
_PURE_EPS = 1e-3
_NEWTON_TOL = 1e-7


# --------------------------------------------------------------------------- config


def _default_photometric() -> dict:
    return {"brightness": 0.0, "contrast": 0.0, "noise": 0.0, "blur": 0.0, "jpeg_quality": None}


@dataclass
class SynthConfig:
    """Scene parameters. Distances are in frame pixels, rates per frame.

    layers: number of foreground blobs, an int or an inclusive (lo, hi) range, 0-8.
    nonrigid_amplitude: peak frame-to-frame change of the non-rigid displacement (px),
        see the module docstring; 0 disables non-rigid motion.
    nonrigid_sigma: Gaussian sigma (px) smoothing the noise that makes the field.
    nonrigid_period: frames per cycle of the field's smooth time variation.
    nonrigid_background: deform the background too (else only the blobs).
    max_strain: cap on the field's Lipschitz constant (< 1 keeps it fold-free).
    camera_motion: background translation speed (px/frame); camera_rotation (deg/frame),
        camera_zoom (relative scale change per frame), camera_perspective (relative
        scale change across the frame per frame) shape the homography path.
    layer_speed: blob speed (px/frame); layer_rotation (deg/frame); layer_scale_rate
        (relative per frame); layer_motion: "similarity", "affine" or "mixed".
    layer_radius: blob radius range as a fraction of min(height, width).
    edge_width: width (texture px) of the soft alpha ramp at blob edges.
    texture_smooth: Gaussian sigma (px) pre-filtering textures (anti-aliasing, so a
        bilinear resample of the texture is close to the continuous image).
    photometric: brightness (max relative gain drift), contrast (max relative contrast
        drift), noise (Gaussian std, 8-bit levels), blur (max Gaussian sigma, px),
        jpeg_quality (int 1-100 or None).
    n_tracks: number of query points; query_frames: frames the queries are drawn at.
    """

    height: int = 256
    width: int = 448
    frames: int = 8
    layers: Any = (1, 4)
    nonrigid_amplitude: float = 0.0
    nonrigid_sigma: float = 30.0
    nonrigid_period: float = 6.0
    nonrigid_background: bool = True
    max_strain: float = 0.8
    camera_motion: float = 4.0
    camera_rotation: float = 0.3
    camera_zoom: float = 0.005
    camera_perspective: float = 0.005
    layer_speed: float = 6.0
    layer_rotation: float = 2.0
    layer_scale_rate: float = 0.015
    layer_motion: str = "mixed"
    layer_radius: tuple = (0.15, 0.32)
    edge_width: float = 3.0
    texture_smooth: float = 0.6
    photometric: dict = dc_field(default_factory=_default_photometric)
    n_tracks: int = 256
    query_frames: tuple = (0,)
    seed: int = 0

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "SynthConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise MotionRefineError(f"unknown SynthConfig keys: {sorted(unknown)}")
        d = dict(d)
        for key in ("layers", "layer_radius", "query_frames"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(**d)


# Named presets. The calibration with the official RAFT-small (12 iterations,
# 256x448): rigid layered real-photo scenes give EPE 0.16-0.37 px and photometric
# changes barely matter (<= 0.7 px); a non-rigid field of 20 px at sigma 15 gave 3.6
# px, 8 px at sigma 40 gave 0.64 px. "photometric" keeps rigid motion so that any
# difference to "easy" is the appearance change alone. Measured on scenes from this
# generator (RAFT-small, 12 iters, 256x448, 2 seeds x 4 pairs, dog_run/hallway/DAVIS
# sources), mean EPE: easy 0.28, photometric 0.31, nonrigid_mild 0.81, nonrigid_hard
# 2.3 px. At sigma 15 the strain cap (0.8) scales the hard preset's 20 px down to
# about 13-19 px per layer (reported in info), hence below the 3.6 px calibration.
PRESETS: dict[str, dict] = {
    "easy": dict(nonrigid_amplitude=0.0),
    "photometric": dict(nonrigid_amplitude=0.0,
                        photometric=dict(brightness=0.15, contrast=0.1, noise=3.0, blur=1.0, jpeg_quality=70)),
    "nonrigid_mild": dict(nonrigid_amplitude=8.0, nonrigid_sigma=40.0),
    "nonrigid_hard": dict(nonrigid_amplitude=20.0, nonrigid_sigma=15.0),
}

# Default benchmark mix (weights): half easy/photometric, half non-rigid, so that
# the easy-vs-hard gap is measurable in every benchmark of a few scenes.
DEFAULT_MIX: dict[str, float] = {"easy": 0.25, "photometric": 0.25, "nonrigid_mild": 0.25, "nonrigid_hard": 0.25}


def make_config(preset: str = "easy", **overrides) -> SynthConfig:
    """A SynthConfig for a named preset, with keyword overrides (photometric merges)."""
    if preset not in PRESETS:
        raise MotionRefineError(f"unknown synth preset {preset!r}; choose from {sorted(PRESETS)}")
    values = dict(PRESETS[preset])
    photo = _default_photometric()
    photo.update(values.pop("photometric", {}))
    photo.update(overrides.pop("photometric", None) or {})
    values.update(overrides)
    return SynthConfig(photometric=photo, **values)


def benchmark_configs(n: int, seed: int = 0, mix: dict[str, float] | None = None,
                      **overrides) -> list[tuple[str, SynthConfig]]:
    """``n`` (preset name, config) pairs, deterministic in ``seed``.

    Presets are allotted in proportion to ``mix`` by largest remainder (every preset
    with weight appears once n >= number of presets), so the mix is exact, not
    sampled; scene i gets seed ``seed * 1000 + i``.
    """
    mix = dict(DEFAULT_MIX if mix is None else mix)
    if n < 1 or not mix or any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise MotionRefineError("benchmark_configs needs n >= 1 and a non-empty mix of non-negative weights")
    names = sorted(mix)
    total = sum(mix.values())
    quota = [n * mix[k] / total for k in names]
    counts = [int(math.floor(q)) for q in quota]
    for i in sorted(range(len(names)), key=lambda i: counts[i] - quota[i])[: n - sum(counts)]:
        counts[i] += 1
    order = [name for name, c in zip(names, counts) for _ in range(c)]
    np.random.default_rng(seed).shuffle(order)
    return [(name, make_config(name, seed=seed * 1000 + i, **overrides)) for i, name in enumerate(order)]


def _validate(cfg: SynthConfig) -> None:
    def bad(msg):
        raise MotionRefineError(f"invalid SynthConfig: {msg}")

    if cfg.height < 8 or cfg.width < 8:
        bad("height and width must be >= 8")
    if cfg.frames < 2:
        bad("frames must be >= 2")
    lo, hi = (cfg.layers, cfg.layers) if isinstance(cfg.layers, (int, np.integer)) else tuple(cfg.layers)
    if not (0 <= lo <= hi <= 8):
        bad(f"layers must be an int or (lo, hi) range within 0..8, got {cfg.layers!r}")
    if cfg.nonrigid_amplitude < 0 or cfg.nonrigid_sigma <= 0 or cfg.nonrigid_period <= 0:
        bad("nonrigid_amplitude >= 0, nonrigid_sigma > 0 and nonrigid_period > 0 required")
    if not (0 < cfg.max_strain < 1):
        bad("max_strain must be in (0, 1)")
    if cfg.layer_motion not in ("similarity", "affine", "mixed"):
        bad("layer_motion must be 'similarity', 'affine' or 'mixed'")
    r0, r1 = cfg.layer_radius
    if not (0 < r0 <= r1 <= 1):
        bad("layer_radius must be a (lo, hi) range of fractions in (0, 1]")
    if cfg.edge_width <= 0:
        bad("edge_width must be > 0")
    if cfg.n_tracks < 0:
        bad("n_tracks must be >= 0")
    if not cfg.query_frames or any(not (0 <= int(q) < cfg.frames) for q in cfg.query_frames):
        bad("query_frames must be a non-empty tuple of frame indices")
    photo = _default_photometric()
    unknown = set(cfg.photometric) - set(photo)
    if unknown:
        bad(f"unknown photometric keys {sorted(unknown)}")
    photo.update(cfg.photometric)
    q = photo["jpeg_quality"]
    if q is not None and not (1 <= int(q) <= 100):
        bad("jpeg_quality must be None or 1..100")
    if min(photo["brightness"], photo["contrast"], photo["noise"], photo["blur"]) < 0:
        bad("photometric amounts must be >= 0")


# --------------------------------------------------------------------------- sampling


def _bilinear(grid: np.ndarray, x: np.ndarray, y: np.ndarray, mode: str = "clamp",
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


def _apply_h(mat: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 3x3 homography to (n, 2) points."""
    q = pts @ mat[:2, :2].T + mat[:2, 2]
    wgt = pts @ mat[2, :2] + mat[2, 2]
    return q / wgt[:, None]


def _smooth_noise_field(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
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


def _lipschitz(field_: np.ndarray) -> float:
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


# --------------------------------------------------------------------------- layers


@dataclass
class Layer:
    """One layer's texture and motion; all maps are pure functions of these fields."""

    kind: str                       # "background" or "foreground"
    texture: np.ndarray             # (h, w, 3) float32, 0..255
    A: np.ndarray                   # (T, 3, 3) float64, rigid part texture -> frame
    field_a: np.ndarray | None      # (h, w, 2) float64 non-rigid basis fields (texture px)
    field_b: np.ndarray | None
    phase: np.ndarray               # (T,) angle of the field rotation per frame
    blob: dict | None               # centre, radius, harmonics (foreground only)
    edge_width: float
    source_index: int
    motion: str
    build_info: dict = dc_field(default_factory=dict)   # amplitude actually used, strain

    def __post_init__(self):
        self.A_inv = np.stack([np.linalg.inv(a) for a in self.A])
        self._d_cache: dict[int, np.ndarray] = {}
        # Bound on |D_t(u)| for all t: |cos Fa + sin Fb| <= sqrt(|Fa|^2 + |Fb|^2).
        self.max_disp = 0.0 if self.field_a is None else float(
            np.sqrt((self.field_a ** 2).sum(-1) + (self.field_b ** 2).sum(-1)).max())

    @property
    def rigid(self) -> bool:
        return self.field_a is None

    def field(self, t: int) -> np.ndarray | None:
        """D_t on the texture grid, (h, w, 2)."""
        if self.rigid:
            return None
        if t not in self._d_cache:
            self._d_cache[t] = math.cos(self.phase[t]) * self.field_a + math.sin(self.phase[t]) * self.field_b
        return self._d_cache[t]

    def displacement(self, t: int, u: np.ndarray) -> np.ndarray:
        d = self.field(t)
        if d is None:
            return np.zeros_like(u)
        return _bilinear(d, u[:, 0], u[:, 1])

    def forward(self, t: int, u: np.ndarray) -> np.ndarray:
        """P_{l,t}: texture points (n, 2) -> frame points (n, 2)."""
        return _apply_h(self.A[t], u + self.displacement(t, u))

    def inverse(self, t: int, x: np.ndarray, return_residual: bool = False):
        """M_{l,t} = P_{l,t}^{-1}: frame points (n, 2) -> texture points (n, 2)."""
        v = _apply_h(self.A_inv[t], x)
        d = self.field(t)
        if d is None:
            return (v, 0.0) if return_residual else v
        u = v - _bilinear(d, v[:, 0], v[:, 1])
        resid = np.full(len(u), np.inf)
        act = np.arange(len(u))   # points still iterating (most converge in 3-4 steps)
        # Newton on g(u) = u + D(u) - v; J = I + grad D is well conditioned because
        # |grad D| <= max_strain < 1.
        for _ in range(12):
            if len(act) == 0:
                break
            ua, va = u[act], v[act]
            val, ddx, ddy = _bilinear(d, ua[:, 0], ua[:, 1], with_grad=True)
            r = ua + val - va
            resid[act] = np.abs(r).max(axis=1)
            keep = resid[act] >= _NEWTON_TOL
            act, r, ua, ddx, ddy = act[keep], r[keep], ua[keep], ddx[keep], ddy[keep]
            j00, j10 = 1.0 + ddx[:, 0], ddx[:, 1]
            j01, j11 = ddy[:, 0], 1.0 + ddy[:, 1]
            det = j00 * j11 - j01 * j10
            u[act] = ua - np.stack([(j11 * r[:, 0] - j01 * r[:, 1]) / det,
                                    (-j10 * r[:, 0] + j00 * r[:, 1]) / det], axis=1)
        if len(act):
            # Newton's last step is not yet verified; the fallback below checks it.
            resid[act] = np.inf
        # Fallback for the rare point where Newton hops between cells: the fixed-point
        # map u <- v - D(u) is a contraction (Lipschitz <= max_strain), so it converges.
        it = 0
        while len(act) and it < 300:
            ua = v[act] - _bilinear(d, u[act, 0], u[act, 1])
            u[act] = ua
            resid[act] = np.abs(ua + _bilinear(d, ua[:, 0], ua[:, 1]) - v[act]).max(axis=1)
            act = act[resid[act] >= _NEWTON_TOL]
            it += 1
        res = float(resid.max()) if len(resid) else 0.0
        return (u, res) if return_residual else u

    def alpha(self, u: np.ndarray) -> np.ndarray:
        """Coverage at texture points (n, 2): 1 inside the blob, soft ramp at its edge."""
        if self.blob is None:
            return np.ones(len(u))
        b = self.blob
        dx, dy = u[:, 0] - b["cx"], u[:, 1] - b["cy"]
        r = np.hypot(dx, dy)
        th = np.arctan2(dy, dx)
        radius = np.full_like(r, b["r0"])
        for k, (a, p) in enumerate(zip(b["amps"], b["phases"]), start=2):
            radius += b["r0"] * a * np.cos(k * th + p)
        return np.clip(0.5 + (radius - r) / self.edge_width, 0.0, 1.0)

    def frame_bbox(self, t: int) -> tuple[float, float, float, float]:
        """Frame-space box containing every point with alpha > 0 (foreground only)."""
        b = self.blob
        ext = b["rmax"] + self.edge_width + self.max_disp + 1.0
        corners = np.array([[b["cx"] - ext, b["cy"] - ext], [b["cx"] + ext, b["cy"] - ext],
                            [b["cx"] - ext, b["cy"] + ext], [b["cx"] + ext, b["cy"] + ext]])
        # A is affine for foreground layers: the image of the square is a
        # parallelogram, contained in the box of its corners.
        p = _apply_h(self.A[t], corners)
        return p[:, 0].min(), p[:, 0].max(), p[:, 1].min(), p[:, 1].max()


# --------------------------------------------------------------------------- sequence


@dataclass
class SynthSequence:
    """A rendered scene. Flow/occlusion index i is the pair (i, i+1); flow_bw[i] maps frame i+1 to i."""

    frames: np.ndarray          # (T, H, W, 3) uint8, after photometric changes
    flow_fw: np.ndarray         # (T-1, H, W, 2) float32, x then y
    flow_bw: np.ndarray         # (T-1, H, W, 2) float32
    occ_fw: np.ndarray          # (T-1, H, W) bool
    occ_bw: np.ndarray          # (T-1, H, W) bool
    tracks: np.ndarray          # (N, T, 2) float32 pixel positions
    occluded: np.ndarray        # (N, T) bool
    query_frame: np.ndarray     # (N,) int32
    query_xy: np.ndarray        # (N, 2) float32
    owner: np.ndarray           # (T, H, W) int8 layer index visible at each pixel (0 = background)
    mixed: np.ndarray           # (T, H, W) bool pixel colour blends several surfaces (alpha edge)
    track_layer: np.ndarray     # (N,) int8 layer each track lies on
    layer_transforms: np.ndarray  # (L+1, T, 3, 3) float64 rigid parts A_{l,t}
    config: SynthConfig
    info: dict
    frames_clean: np.ndarray | None = None   # (T, H, W, 3) uint8 before photometric changes
    layers: list[Layer] | None = None        # full layer models (in memory only)


def _check_sources(sources: Sequence[np.ndarray]) -> list[np.ndarray]:
    if sources is None or len(sources) == 0:
        raise MotionRefineError("render_sequence needs at least one source frame")
    out = []
    for i, s in enumerate(sources):
        a = np.asarray(s)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) < 8:
            raise MotionRefineError(
                f"source frame {i} must be an (H, W, 3) uint8 RGB image of at least 8x8, got "
                f"{a.dtype} {a.shape}")
        out.append(a)
    return out


def _texture_crop(rng, src: np.ndarray, th: int, tw: int, scale: float, smooth: float) -> np.ndarray:
    """Resize ``src`` by ``scale`` (more if needed to cover th x tw), random crop, pre-filter."""
    sh, sw = src.shape[:2]
    scale = max(scale, th / sh, tw / sw)
    nh, nw = max(th, int(math.ceil(sh * scale))), max(tw, int(math.ceil(sw * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    img = cv2.resize(src, (nw, nh), interpolation=interp).astype(np.float32)
    y0 = int(rng.integers(0, nh - th + 1))
    x0 = int(rng.integers(0, nw - tw + 1))
    tex = np.ascontiguousarray(img[y0:y0 + th, x0:x0 + tw])
    if smooth > 0:
        tex = cv2.GaussianBlur(tex, (0, 0), sigmaX=smooth, sigmaY=smooth, borderType=cv2.BORDER_REFLECT_101)
    return tex


def _smooth_path(rng, frames: int, rate: float, jitter: float) -> np.ndarray:
    """rate * t + a smooth sinusoidal perturbation, zero at t = 0."""
    t = np.arange(frames, dtype=np.float64)
    period = rng.uniform(6.0, 16.0)
    ph = rng.uniform(0, 2 * np.pi)
    wobble = jitter * (np.sin(2 * np.pi * t / period + ph) - np.sin(ph))
    return rate * t + wobble


def _make_nonrigid(rng, cfg: SynthConfig, h: int, w: int, phase: np.ndarray):
    """Basis fields scaled to the requested amplitude, capped at max_strain; returns (Fa, Fb, info)."""
    fa = _smooth_noise_field(rng, h, w, cfg.nonrigid_sigma)
    fb = _smooth_noise_field(rng, h, w, cfg.nonrigid_sigma)
    # Peak frame-to-frame change over the grid nodes (the peak of a bilinear
    # interpolant's magnitude is at a node).
    peak = 0.0
    for t in range(len(phase) - 1):
        ca = math.cos(phase[t + 1]) - math.cos(phase[t])
        cb = math.sin(phase[t + 1]) - math.sin(phase[t])
        peak = max(peak, float(np.sqrt(((ca * fa + cb * fb) ** 2).sum(-1)).max()))
    scale = cfg.nonrigid_amplitude / max(peak, 1e-12)
    fa *= scale
    fb *= scale
    strain = max(_lipschitz(math.cos(p) * fa + math.sin(p) * fb) for p in phase)
    capped = strain > cfg.max_strain
    shrink = 1.0
    if capped:
        shrink = cfg.max_strain / strain
        fa *= shrink
        fb *= shrink
        strain = cfg.max_strain
    eff = cfg.nonrigid_amplitude * shrink
    info = {"nonrigid_amplitude": float(eff), "strain": float(strain), "strain_capped": bool(capped)}
    return fa, fb, info


def _build_layers(rng, sources: list[np.ndarray], cfg: SynthConfig) -> list[Layer]:
    H, W, T = cfg.height, cfg.width, cfg.frames
    t = np.arange(T, dtype=np.float64)
    lo, hi = (cfg.layers, cfg.layers) if isinstance(cfg.layers, (int, np.integer)) else tuple(cfg.layers)
    n_fg = int(rng.integers(lo, hi + 1))
    bg_index = int(rng.integers(len(sources)))
    omega = 2 * np.pi / cfg.nonrigid_period
    deform = cfg.nonrigid_amplitude > 0

    # Background: camera homography G_t about the frame centre, near identity.
    ang = rng.uniform(0, 2 * np.pi)
    speed = cfg.camera_motion * rng.uniform(0.5, 1.0)
    tx = _smooth_path(rng, T, speed * math.cos(ang), 0.25 * cfg.camera_motion)
    ty = _smooth_path(rng, T, speed * math.sin(ang), 0.25 * cfg.camera_motion)
    rot = np.deg2rad(_smooth_path(rng, T, cfg.camera_rotation * rng.uniform(-1, 1), 0.3 * cfg.camera_rotation))
    zoom = np.exp(_smooth_path(rng, T, cfg.camera_zoom * rng.uniform(-1, 1), 0.3 * cfg.camera_zoom))
    pdir = rng.uniform(0, 2 * np.pi)
    pmag = cfg.camera_perspective * rng.uniform(0.3, 1.0) / max(H, W) * t
    cx, cy = (W - 1) / 2.0, (H - 1) / 2.0
    C = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1.0]])
    Ci = np.linalg.inv(C)
    G = []
    for i in range(T):
        c, s = zoom[i] * math.cos(rot[i]), zoom[i] * math.sin(rot[i])
        M = np.array([[c, -s, tx[i]], [s, c, ty[i]],
                      [pmag[i] * math.cos(pdir), pmag[i] * math.sin(pdir), 1.0]])
        G.append(C @ M @ Ci)
    # Texture extent: every frame's footprint in background coordinates plus room for
    # the non-rigid displacement; anything beyond is mirrored (still exact geometry).
    corners = np.array([[0, 0], [W - 1, 0], [0, H - 1], [W - 1, H - 1]], dtype=np.float64)
    foot = np.concatenate([_apply_h(np.linalg.inv(g), corners) for g in G])
    pad = 4.0 + (2.5 * cfg.nonrigid_amplitude if deform and cfg.nonrigid_background else 0.0)
    x0, y0 = math.floor(foot[:, 0].min() - pad), math.floor(foot[:, 1].min() - pad)
    x1, y1 = math.ceil(foot[:, 0].max() + pad), math.ceil(foot[:, 1].max() + pad)
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    src = sources[bg_index]
    bg_tex = _texture_crop(rng, src, bh, bw, max(H / src.shape[0], W / src.shape[1]), cfg.texture_smooth)
    B = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1.0]])  # texture -> camera-rest frame coords
    A_bg = np.stack([g @ B for g in G])
    phase = rng.uniform(0, 2 * np.pi) + omega * t
    fa = fb = None
    linfo: dict = {"nonrigid_amplitude": 0.0, "strain": 0.0, "strain_capped": False}
    if deform and cfg.nonrigid_background:
        fa, fb, linfo = _make_nonrigid(rng, cfg, bh, bw, phase)
    layers = [Layer("background", bg_tex, A_bg, fa, fb, phase, None, cfg.edge_width, bg_index, "homography", linfo)]

    others = [i for i in range(len(sources)) if i != bg_index] or [bg_index]
    for _ in range(n_fg):
        si = int(others[rng.integers(len(others))])
        r0 = rng.uniform(*cfg.layer_radius) * min(H, W)
        amps = rng.uniform(-1, 1, size=4) * np.array([0.25, 0.15, 0.1, 0.06])
        rmax = r0 * (1 + np.abs(amps).sum())
        half = int(math.ceil(rmax + cfg.edge_width + 2))
        size = 2 * half + 1
        src = sources[si]
        tex = _texture_crop(rng, src, size, size, max(H / src.shape[0], W / src.shape[1]), cfg.texture_smooth)
        blob = {"cx": float(half), "cy": float(half), "r0": float(r0), "rmax": float(rmax),
                "amps": [float(a) for a in amps], "phases": [float(p) for p in rng.uniform(0, 2 * np.pi, 4)]}
        motion = cfg.layer_motion if cfg.layer_motion != "mixed" else ("similarity", "affine")[int(rng.integers(2))]
        c0 = np.array([rng.uniform(0.15, 0.85) * (W - 1), rng.uniform(0.15, 0.85) * (H - 1)])
        va = rng.uniform(0, 2 * np.pi)
        v = cfg.layer_speed * rng.uniform(0.5, 1.0) * np.array([math.cos(va), math.sin(va)])
        acc = 0.1 * cfg.layer_speed * rng.uniform(-1, 1, size=2)
        phi = rng.uniform(-np.pi, np.pi) * 0.25 + np.deg2rad(cfg.layer_rotation) * rng.uniform(-1, 1) * t
        sc = rng.uniform(0.8, 1.25) * np.exp(cfg.layer_scale_rate * rng.uniform(-1, 1) * t)
        if motion == "affine":
            e = rng.uniform(-0.08, 0.08) + rng.uniform(-0.01, 0.01) * t
            g = rng.uniform(-0.08, 0.08) + rng.uniform(-0.01, 0.01) * t
        else:
            e = g = np.zeros(T)
        A = np.zeros((T, 3, 3))
        for i in range(T):
            R = np.array([[math.cos(phi[i]), -math.sin(phi[i])], [math.sin(phi[i]), math.cos(phi[i])]])
            S = sc[i] * np.array([[1 + e[i], g[i]], [g[i], 1 - e[i]]])
            L = R @ S
            ci = c0 + v * t[i] + 0.5 * acc * t[i] ** 2
            A[i, :2, :2] = L
            A[i, :2, 2] = ci - L @ np.array([blob["cx"], blob["cy"]])
            A[i, 2, 2] = 1.0
        lphase = rng.uniform(0, 2 * np.pi) + omega * t
        fa = fb = None
        linfo = {"nonrigid_amplitude": 0.0, "strain": 0.0, "strain_capped": False}
        if deform:
            fa, fb, linfo = _make_nonrigid(rng, cfg, size, size, lphase)
        layers.append(Layer("foreground", tex, A, fa, fb, lphase, blob, cfg.edge_width, si, motion, linfo))
    return layers


def _pixel_grid(H: int, W: int) -> np.ndarray:
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def _outside(p: np.ndarray, H: int, W: int) -> np.ndarray:
    return (p[:, 0] < 0) | (p[:, 0] > W - 1) | (p[:, 1] < 0) | (p[:, 1] > H - 1)


def _covered_by_front(layers: list[Layer], t: int, layer_idx: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """True where a layer in front of ``layer_idx`` covers ``pts`` (alpha >= 0.5) in frame t."""
    hidden = np.zeros(len(pts), bool)
    for k in range(1, len(layers)):
        x0, x1, y0, y1 = layers[k].frame_bbox(t)
        # Only points of layers behind k inside k's box need the exact (costly) test.
        sel = np.flatnonzero((layer_idx < k) & ~hidden & (pts[:, 0] >= x0) & (pts[:, 0] <= x1)
                             & (pts[:, 1] >= y0) & (pts[:, 1] <= y1))
        if len(sel):
            a = layers[k].alpha(layers[k].inverse(t, pts[sel]))
            hidden[sel[a >= _OWN_ALPHA]] = True
    return hidden


def _photometric(rng, frames: np.ndarray, photo: dict) -> np.ndarray:
    T = len(frames)
    gain = 1.0 + photo["brightness"] * np.sin(_smooth_path(rng, T, rng.uniform(-0.3, 0.3), 1.0) + rng.uniform(0, 6.3))
    contrast = 1.0 + photo["contrast"] * np.sin(_smooth_path(rng, T, rng.uniform(-0.3, 0.3), 1.0) + rng.uniform(0, 6.3))
    blur = photo["blur"] * np.abs(np.sin(_smooth_path(rng, T, rng.uniform(-0.4, 0.4), 1.0) + rng.uniform(0, 6.3)))
    out = np.empty_like(frames)
    for i in range(T):
        img = frames[i].astype(np.float32)
        mean = img.mean()
        img = ((img - mean) * contrast[i] + mean) * gain[i]
        if blur[i] > 0.05:
            img = cv2.GaussianBlur(img, (0, 0), sigmaX=float(blur[i]), sigmaY=float(blur[i]),
                                   borderType=cv2.BORDER_REFLECT_101)
        if photo["noise"] > 0:
            img = img + rng.standard_normal(img.shape).astype(np.float32) * photo["noise"]
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        if photo["jpeg_quality"] is not None:
            ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(photo["jpeg_quality"])])
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
        out[i] = img
    return out


def _sample_queries(rng, layers, cfg: SynthConfig):
    """Query points per query frame: half spread evenly over visible surfaces, half uniform."""
    H, W = cfg.height, cfg.width
    qframes = [int(q) for q in cfg.query_frames]
    counts = [cfg.n_tracks // len(qframes) + (1 if i < cfg.n_tracks % len(qframes) else 0) for i in range(len(qframes))]
    qs, xy, own = [], [], []
    for q, n in zip(qframes, counts):
        if n == 0:
            continue
        cand = rng.uniform(0, 1, size=(max(40 * n, 400), 2)) * np.array([W - 1, H - 1])
        alphas = np.stack([ly.alpha(ly.inverse(q, cand)) for ly in layers], axis=1)
        owner = np.zeros(len(cand), np.int64)
        for k in range(1, len(layers)):
            owner[alphas[:, k] >= _OWN_ALPHA] = k
        # Keep clean surface points: the owner fully opaque, nothing in front of it
        # partially covering (alpha-edge points have no single well-defined colour).
        oa = alphas[np.arange(len(cand)), owner]
        behind_or_self = np.arange(len(layers))[None, :] <= owner[:, None]
        front = np.where(behind_or_self, 0.0, alphas).max(axis=1)
        keep = np.flatnonzero((oa >= 1 - _PURE_EPS) & (front <= _PURE_EPS))
        present = np.unique(owner[keep])
        chosen: list[int] = []
        per = (n // 2) // max(len(present), 1)
        for k in present:
            pool = keep[owner[keep] == k]
            chosen.extend(rng.choice(pool, size=min(per, len(pool)), replace=False).tolist())
        rest = np.setdiff1d(keep, np.array(chosen, dtype=np.int64))
        chosen.extend(rng.choice(rest, size=min(n - len(chosen), len(rest)), replace=False).tolist())
        chosen = np.array(chosen, dtype=np.int64)
        qs.append(np.full(len(chosen), q, np.int32))
        xy.append(cand[chosen])
        own.append(owner[chosen])
    if not qs:
        return np.zeros(0, np.int32), np.zeros((0, 2)), np.zeros(0, np.int64)
    return np.concatenate(qs), np.concatenate(xy), np.concatenate(own)


def render_sequence(sources: Sequence[np.ndarray], cfg: SynthConfig | None = None) -> SynthSequence:
    """Render a scene from real RGB uint8 frames; deterministic in ``cfg.seed`` (and the sources)."""
    cfg = SynthConfig() if cfg is None else cfg
    _validate(cfg)
    srcs = _check_sources(sources)
    photo = _default_photometric()
    photo.update(cfg.photometric)
    rng = np.random.default_rng(cfg.seed)
    layers = _build_layers(rng, srcs, cfg)
    H, W, T = cfg.height, cfg.width, cfg.frames
    grid = _pixel_grid(H, W)
    n = H * W

    frames = np.empty((T, H, W, 3), np.uint8)
    owner = np.empty((T, n), np.int8)
    mixed = np.empty((T, n), bool)
    u_owner = np.empty((T, n, 2))
    inv_res = 0.0
    for t in range(T):
        colour = np.zeros((n, 3), np.float32)
        own = np.zeros(n, np.int8)
        alpha_own = np.ones(n)
        front_max = np.zeros(n)   # largest alpha in front of the current owner
        uo = np.empty((n, 2))
        for k, ly in enumerate(layers):
            if k == 0:
                sel = np.arange(n)
            else:
                x0, x1, y0, y1 = ly.frame_bbox(t)
                sel = np.flatnonzero((grid[:, 0] >= x0) & (grid[:, 0] <= x1) & (grid[:, 1] >= y0) & (grid[:, 1] <= y1))
                if len(sel) == 0:
                    continue
            u, res = ly.inverse(t, grid[sel], return_residual=True)
            inv_res = max(inv_res, res)
            a = ly.alpha(u)
            tex = _bilinear(ly.texture, u[:, 0], u[:, 1], mode="reflect" if k == 0 else "clamp")
            # Back-to-front "over" compositing.
            colour[sel] = (1 - a[:, None].astype(np.float32)) * colour[sel] + a[:, None].astype(np.float32) * tex
            takes = a >= _OWN_ALPHA
            front_max[sel] = np.where(takes, 0.0, np.maximum(front_max[sel], a))
            own[sel[takes]] = k
            alpha_own[sel[takes]] = a[takes]
            uo[sel[takes]] = u[takes]
        frames[t] = np.clip(np.rint(colour), 0, 255).astype(np.uint8).reshape(H, W, 3)
        owner[t] = own
        mixed[t] = (alpha_own < 1 - _PURE_EPS) | (front_max > _PURE_EPS)
        u_owner[t] = uo

    flow_fw = np.empty((T - 1, n, 2), np.float32)
    flow_bw = np.empty((T - 1, n, 2), np.float32)
    occ_fw = np.empty((T - 1, n), bool)
    occ_bw = np.empty((T - 1, n), bool)
    for t in range(T - 1):
        for src_t, dst_t, flow, occ in ((t, t + 1, flow_fw, occ_fw), (t + 1, t, flow_bw, occ_bw)):
            tgt = np.empty((n, 2))
            for k, ly in enumerate(layers):
                m = owner[src_t] == k
                if m.any():
                    tgt[m] = ly.forward(dst_t, u_owner[src_t][m])
            flow[t] = (tgt - grid).astype(np.float32)
            occ[t] = _outside(tgt, H, W) | _covered_by_front(layers, dst_t, owner[src_t].astype(np.int64), tgt)

    # Tracks.
    qf, qxy, qlayer = _sample_queries(rng, layers, cfg)
    N = len(qf)
    tracks = np.zeros((N, T, 2))
    occluded = np.zeros((N, T), bool)
    if N:
        qu = np.empty((N, 2))
        for k, ly in enumerate(layers):
            for q in np.unique(qf):
                m = (qlayer == k) & (qf == q)
                if m.any():
                    qu[m] = ly.inverse(int(q), qxy[m])
        for t in range(T):
            pos = np.empty((N, 2))
            for k, ly in enumerate(layers):
                m = qlayer == k
                if m.any():
                    pos[m] = ly.forward(t, qu[m])
            on_q = qf == t
            pos[on_q] = qxy[on_q]  # exact at the query frame (forward(inverse(x)) = x up to 1e-7)
            tracks[:, t] = pos
            occluded[:, t] = _outside(pos, H, W) | _covered_by_front(layers, t, qlayer, pos)
            occluded[on_q, t] = False

    clean = frames
    if any(photo[k] for k in ("brightness", "contrast", "noise", "blur")) or photo["jpeg_quality"] is not None:
        frames = _photometric(rng, clean, photo)

    info = {
        "format_version": SYNTH_FORMAT_VERSION,
        "n_layers": len(layers),
        "inverse_residual_max": float(inv_res),
        "layers": [{"kind": ly.kind, "source_index": ly.source_index, "motion": ly.motion,
                    "texture_shape": list(ly.texture.shape[:2]), **ly.build_info} for ly in layers],
    }
    return SynthSequence(
        frames=frames,
        flow_fw=flow_fw.reshape(T - 1, H, W, 2),
        flow_bw=flow_bw.reshape(T - 1, H, W, 2),
        occ_fw=occ_fw.reshape(T - 1, H, W),
        occ_bw=occ_bw.reshape(T - 1, H, W),
        tracks=tracks.astype(np.float32),
        occluded=occluded,
        query_frame=qf.astype(np.int32),
        query_xy=qxy.astype(np.float32),
        owner=owner.reshape(T, H, W),
        mixed=mixed.reshape(T, H, W),
        track_layer=qlayer.astype(np.int8),
        layer_transforms=np.stack([ly.A for ly in layers]),
        config=cfg,
        info=info,
        frames_clean=clean,
        layers=layers,
    )


# --------------------------------------------------------------------------- checks


def _to_torch_img(a: np.ndarray) -> torch.Tensor:
    """(H, W, C) array -> (1, C, H, W) float64 tensor."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).permute(2, 0, 1)[None]


def clean_pairs(seq: SynthSequence, t: int, direction: str = "fw") -> np.ndarray:
    """(H, W) bool: pixels of pair t where warp-based checks are meaningful.

    Not occluded, the pixel's colour is a single surface (not ``mixed``), and every
    pixel the bilinear sample at x + flow touches in the other frame is a pure pixel of
    the same surface (otherwise interpolation blends two surfaces' colours or flows).
    """
    if direction == "fw":
        src, dst, flow, occ = t, t + 1, seq.flow_fw[t], seq.occ_fw[t]
    else:
        src, dst, flow, occ = t + 1, t, seq.flow_bw[t], seq.occ_bw[t]
    own_s, own_d = seq.owner[src], seq.owner[dst]
    pure_d = ~seq.mixed[dst]
    h, w = own_s.shape
    ys, xs = np.mgrid[0:h, 0:w]
    tx = xs + flow[..., 0].astype(np.float64)
    ty = ys + flow[..., 1].astype(np.float64)
    # The same cell the bilinear sampler uses (align_corners=True, pixel centres at integers).
    x0 = np.clip(np.floor(tx), 0, max(w - 2, 0)).astype(np.int64)
    y0 = np.clip(np.floor(ty), 0, max(h - 2, 0)).astype(np.int64)
    fx, fy = tx - x0, ty - y0
    good = np.ones_like(own_s, dtype=bool)
    for dy, dx, wgt in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        yy, xx = np.minimum(y0 + dy, h - 1), np.minimum(x0 + dx, w - 1)
        same = (own_d[yy, xx] == own_s) & pure_d[yy, xx]
        good &= same | (wgt <= 1e-9)
    return ~occ & ~seq.mixed[src] & good


def self_check(seq: SynthSequence, use_clean: bool = True) -> dict:
    """Measure how well the ground truth explains the frames; ``ok`` summarises the thresholds.

    For every pair and direction, on ``clean_pairs`` pixels:
    * warp residual: |frame_t(x) - frame_{t+1}(x + F_fw(x))| (bilinear, geometry.backward_warp),
      in units of the 0..1 intensity range; mean and 95th percentile over pixels and
      channels. Uses ``frames_clean`` when present and ``use_clean`` (photometric
      changes are deliberate appearance changes, not geometry errors);
    * forward-backward consistency |F_fw(x) + F_bw(x + F_fw(x))| in px (median, p95).
    ``ok`` requires warp mean < 2/255, warp p95 < 8/255 (checked on clean frames only),
    fb median < 0.05 px, Newton residual < 1e-4 px and >= 30 % of pixels checkable.
    """
    frames = seq.frames_clean if (use_clean and seq.frames_clean is not None) else seq.frames
    clean = frames is seq.frames_clean or seq.frames_clean is None and not _has_photometric(seq.config)
    # All pairs and both directions in one batched warp (per-call overhead dominates on CPU).
    P = len(seq.flow_fw)
    src = np.concatenate([frames[:-1], frames[1:]]).astype(np.float32)     # frame the flow starts in
    dst = np.concatenate([frames[1:], frames[:-1]]).astype(np.float32)     # frame it points into
    flows = np.concatenate([seq.flow_fw, seq.flow_bw])
    others = np.concatenate([seq.flow_bw, seq.flow_fw])
    valid = np.stack([clean_pairs(seq, t, d) for d in ("fw", "bw") for t in range(P)])
    flt = torch.from_numpy(np.ascontiguousarray(flows)).permute(0, 3, 1, 2)
    warped = backward_warp(torch.from_numpy(dst).permute(0, 3, 1, 2), flt).permute(0, 2, 3, 1).numpy()
    back = backward_warp(torch.from_numpy(np.ascontiguousarray(others)).permute(0, 3, 1, 2), flt)
    back = back.permute(0, 2, 3, 1).numpy()
    res = np.abs(warped - src)[valid].ravel() / 255.0
    fb = np.linalg.norm(flows + back, axis=-1)[valid]
    n_valid, n_total = int(valid.sum()), valid.size
    stats = {
        "frames_checked": "clean" if clean else "photometric",
        "valid_fraction": n_valid / max(n_total, 1),
        "warp_mae": float(res.mean()) if res.size else float("nan"),
        "warp_p95": float(np.percentile(res, 95)) if res.size else float("nan"),
        "fb_median": float(np.median(fb)) if fb.size else float("nan"),
        "fb_p95": float(np.percentile(fb, 95)) if fb.size else float("nan"),
        "occ_fw_fraction": float(seq.occ_fw.mean()),
        "track_occluded_fraction": float(seq.occluded.mean()) if seq.occluded.size else 0.0,
        "inverse_residual_max": float(seq.info.get("inverse_residual_max", 0.0)),
    }
    ok = (stats["valid_fraction"] >= 0.3 and stats["fb_median"] < 0.05
          and stats["inverse_residual_max"] < 1e-4)
    if clean:
        ok = ok and stats["warp_mae"] < 2 / 255 and stats["warp_p95"] < 8 / 255
    stats["ok"] = bool(ok)
    return stats


def _has_photometric(cfg: SynthConfig) -> bool:
    p = _default_photometric()
    p.update(cfg.photometric)
    return bool(any(p[k] for k in ("brightness", "contrast", "noise", "blur")) or p["jpeg_quality"] is not None)


# --------------------------------------------------------------------------- storage

_ARRAYS = ("frames", "flow_fw", "flow_bw", "occ_fw", "occ_bw", "tracks", "occluded", "query_frame",
           "query_xy", "owner", "mixed", "track_layer", "layer_transforms")


def write_sequence(seq: SynthSequence, path: str | os.PathLike, attrs: dict | None = None) -> None:
    """Write ``seq`` as a Zarr v3 group, atomically; ``attrs`` (e.g. source description) are merged in.

    Arrays: frames, flow_fw, flow_bw, occ_fw, occ_bw, tracks, occluded, query_frame,
    query_xy, plus owner, mixed, track_layer, layer_transforms, and frames_clean when
    photometric changes were applied. Attrs: config, seed, info, format_version and
    the caller's ``attrs``.
    """
    with atomic_group(path) as g:
        for name in _ARRAYS:
            data = np.ascontiguousarray(getattr(seq, name))
            chunks = None if data.ndim >= 3 else data.shape
            write_array(g, name, data, chunks=chunks)
        if seq.frames_clean is not None and seq.frames_clean is not seq.frames:
            write_array(g, "frames_clean", np.ascontiguousarray(seq.frames_clean))
        meta = {"config": seq.config.to_dict(), "seed": int(seq.config.seed), "info": seq.info,
                "format_version": SYNTH_FORMAT_VERSION}
        meta.update(json.loads(json.dumps(attrs or {})))
        g.attrs.update(meta)


def read_sequence(path: str | os.PathLike) -> SynthSequence:
    """Read a store written by ``write_sequence`` (layer models are not stored: ``layers`` is None)."""
    g = open_group(path)
    missing = [k for k in _ARRAYS if k not in g]
    if missing or "config" not in g.attrs:
        raise MotionRefineError(f"{path} is not a synth sequence store (missing {missing or ['config attr']})")
    arrays = {k: g[k][...] for k in _ARRAYS}
    clean = g["frames_clean"][...] if "frames_clean" in g else arrays["frames"]
    return SynthSequence(config=SynthConfig.from_dict(dict(g.attrs["config"])), info=dict(g.attrs.get("info", {})),
                         frames_clean=clean, layers=None, **arrays)
