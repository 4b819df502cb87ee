"""Rendering a scene: frames, flow, occlusion and tracks from the layer maps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from motionrefine.bench.synth.config import SynthConfig, default_photometric, validate
from motionrefine.bench.synth.layers import Layer, build_layers, smooth_path
from motionrefine.bench.synth.sampling import bilinear
from motionrefine.core.errors import MotionRefineError

SYNTH_FORMAT_VERSION = 1

# Alpha thresholds: a point belongs to a layer at alpha >= 0.5; a pixel is "mixed"
# (its colour blends two surfaces) when any alpha involved is strictly inside (0, 1).
_OWN_ALPHA = 0.5
_PURE_EPS = 1e-3


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
    gain = 1.0 + photo["brightness"] * np.sin(smooth_path(rng, T, rng.uniform(-0.3, 0.3), 1.0) + rng.uniform(0, 6.3))
    contrast = 1.0 + photo["contrast"] * np.sin(smooth_path(rng, T, rng.uniform(-0.3, 0.3), 1.0) + rng.uniform(0, 6.3))
    blur = photo["blur"] * np.abs(np.sin(smooth_path(rng, T, rng.uniform(-0.4, 0.4), 1.0) + rng.uniform(0, 6.3)))
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
    validate(cfg)
    srcs = _check_sources(sources)
    photo = default_photometric()
    photo.update(cfg.photometric)
    rng = np.random.default_rng(cfg.seed)
    layers = build_layers(rng, srcs, cfg)
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
            tex = bilinear(ly.texture, u[:, 0], u[:, 1], mode="reflect" if k == 0 else "clamp")
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
