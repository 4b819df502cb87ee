"""The layer model (texture, rigid path, non-rigid field, alpha) and its random construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field

import cv2
import numpy as np

from motionrefine.bench.synth.config import SynthConfig
from motionrefine.bench.synth.sampling import apply_h, bilinear, lipschitz, smooth_noise_field

_NEWTON_TOL = 1e-7


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
        return bilinear(d, u[:, 0], u[:, 1])

    def forward(self, t: int, u: np.ndarray) -> np.ndarray:
        """P_{l,t}: texture points (n, 2) -> frame points (n, 2)."""
        return apply_h(self.A[t], u + self.displacement(t, u))

    def inverse(self, t: int, x: np.ndarray, return_residual: bool = False):
        """M_{l,t} = P_{l,t}^{-1}: frame points (n, 2) -> texture points (n, 2)."""
        v = apply_h(self.A_inv[t], x)
        d = self.field(t)
        if d is None:
            return (v, 0.0) if return_residual else v
        u = v - bilinear(d, v[:, 0], v[:, 1])
        resid = np.full(len(u), np.inf)
        act = np.arange(len(u))   # points still iterating (most converge in 3-4 steps)
        # Newton on g(u) = u + D(u) - v; J = I + grad D is well conditioned because
        # |grad D| <= max_strain < 1.
        for _ in range(12):
            if len(act) == 0:
                break
            ua, va = u[act], v[act]
            val, ddx, ddy = bilinear(d, ua[:, 0], ua[:, 1], with_grad=True)
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
            ua = v[act] - bilinear(d, u[act, 0], u[act, 1])
            u[act] = ua
            resid[act] = np.abs(ua + bilinear(d, ua[:, 0], ua[:, 1]) - v[act]).max(axis=1)
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
        p = apply_h(self.A[t], corners)
        return p[:, 0].min(), p[:, 0].max(), p[:, 1].min(), p[:, 1].max()


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


def smooth_path(rng, frames: int, rate: float, jitter: float) -> np.ndarray:
    """rate * t + a smooth sinusoidal perturbation, zero at t = 0."""
    t = np.arange(frames, dtype=np.float64)
    period = rng.uniform(6.0, 16.0)
    ph = rng.uniform(0, 2 * np.pi)
    wobble = jitter * (np.sin(2 * np.pi * t / period + ph) - np.sin(ph))
    return rate * t + wobble


def _make_nonrigid(rng, cfg: SynthConfig, h: int, w: int, phase: np.ndarray):
    """Basis fields scaled to the requested amplitude, capped at max_strain; returns (Fa, Fb, info)."""
    fa = smooth_noise_field(rng, h, w, cfg.nonrigid_sigma)
    fb = smooth_noise_field(rng, h, w, cfg.nonrigid_sigma)
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
    strain = max(lipschitz(math.cos(p) * fa + math.sin(p) * fb) for p in phase)
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


def build_layers(rng, sources: list[np.ndarray], cfg: SynthConfig) -> list[Layer]:
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
    tx = smooth_path(rng, T, speed * math.cos(ang), 0.25 * cfg.camera_motion)
    ty = smooth_path(rng, T, speed * math.sin(ang), 0.25 * cfg.camera_motion)
    rot = np.deg2rad(smooth_path(rng, T, cfg.camera_rotation * rng.uniform(-1, 1), 0.3 * cfg.camera_rotation))
    zoom = np.exp(smooth_path(rng, T, cfg.camera_zoom * rng.uniform(-1, 1), 0.3 * cfg.camera_zoom))
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
    foot = np.concatenate([apply_h(np.linalg.inv(g), corners) for g in G])
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
