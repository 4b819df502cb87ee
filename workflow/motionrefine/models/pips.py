"""PIPs (v1) multi-frame point tracker, after Harley, Fang, Li & Guibas, "Particle Video
Revisited: Tracking Through Occlusions Using Point Trajectories" (ECCV 2022).

One module, four parts:

* ``PipsEncoder``: RAFT-style residual stages at 1/2, 1/4, 1/8 and 1/16 resolution, each
  resized to 1/stride and fused by a 3×3 and a 1×1 convolution into ``latent_dim`` channels.
* local correlation: the point's feature is correlated with a 4-level average-pooled
  pyramid of every frame's features, in a (2r+1)² window (r = 3) around the current
  estimate, computed on demand from bilinear feature samples (no full H×W map).
* ``DeltaBlock``: an MLP-Mixer over the S frames of a window; input per frame = point
  feature, correlations, sin/cos embedding of (displacement from frame 0, time); output =
  coordinate and feature deltas for every frame.
* a feature updater and a visibility head.

Parameter names and shapes of the "published" size follow the released checkpoint
(aharley/pips ``model-000200000.pth``); see docs/pips-layout.md for what was checked. A few
numerical conventions are kept only because those weights were trained with them; each is
marked "published convention" below.

Coordinates are (x, y) pixels with pixel centres at integers, like ``geometry``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from motionrefine.core.errors import AssetMissingError, CheckpointError, MotionRefineError
from motionrefine.core.geometry import sample_bilinear
from motionrefine.models.checkpoint import load_state_strict
from motionrefine.core.store import save_atomic, sha256_file
from motionrefine.models.raft.corr import window_offsets
from motionrefine.models.raft.extractor import ResidualBlock

PIPS_RELEASE = "https://github.com/aharley/pips (reference_model/model-000200000.pth)"


# --------------------------------------------------------------------------- config

@dataclass(frozen=True)
class PipsConfig:
    S: int = 8                      # frames per window; the mixer's token MLP is sized by it
    stride: int = 4                 # feature stride; changes no parameter shape
    latent_dim: int = 128
    mixer_dim: int = 512
    mixer_depth: int = 12
    expansion: int = 4
    corr_levels: int = 4
    corr_radius: int = 3
    embed_dim: int = 64             # sin/cos channels per embedded coordinate (x, y, t)
    encoder_widths: tuple[int, int, int, int, int] = (64, 64, 96, 128, 128)  # stem, layer1..4
    dropout: float = 0.0

    @classmethod
    def size(cls, name: str, **overrides) -> "PipsConfig":
        """'published' (the released checkpoint's layout) or 'small' (a CPU-sized variant)."""
        if name == "published":
            # The released weights are run at stride 4 by the PIPs demos and the refinement
            # code (the class default in the public code is 8); stride is a free choice at load.
            cfg = cls()
        elif name == "small":
            cfg = cls(stride=8, latent_dim=64, mixer_dim=256, mixer_depth=4,
                      encoder_widths=(32, 32, 48, 64, 64))
        else:
            raise MotionRefineError(f"unknown PIPs size {name!r} (expected 'published' or 'small')")
        return replace(cfg, **overrides) if overrides else cfg

    def __post_init__(self):
        if self.encoder_widths[0] != self.encoder_widths[1]:
            # layer1 has stride 1 and therefore no projection on its skip path
            raise MotionRefineError(f"encoder stem and layer1 widths must match, got {self.encoder_widths}")
        if self.S < 3 or self.stride < 1 or self.embed_dim % 2:
            raise MotionRefineError(f"invalid PIPs config {self}")

    @property
    def corr_dim(self) -> int:
        return self.corr_levels * (2 * self.corr_radius + 1) ** 2

    @property
    def mixer_input_dim(self) -> int:
        return self.latent_dim + self.corr_dim + 3 * self.embed_dim + 3


# --------------------------------------------------------------------------- encoder

class PipsEncoder(nn.Module):
    """Multi-scale residual encoder: (N, 3, H, W) in [−1, 1] → (N, latent, H//stride, W//stride)."""

    def __init__(self, out_dim: int, widths: tuple[int, ...], stride: int, dropout: float = 0.0):
        super().__init__()
        stem, *stages = widths
        self.stride = stride
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3)
        self.norm1 = nn.InstanceNorm2d(stem)
        self.relu1 = nn.ReLU(inplace=True)
        in_planes = stem
        for i, (planes, s) in enumerate(zip(stages, (1, 2, 2, 2)), start=1):
            setattr(self, f"layer{i}", nn.Sequential(ResidualBlock(in_planes, planes, "instance", s),
                                                     ResidualBlock(planes, planes, "instance", 1)))
            in_planes = planes
        self.conv2 = nn.Conv2d(sum(stages), 2 * out_dim, 3, padding=1)
        self.norm2 = nn.InstanceNorm2d(2 * out_dim)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(2 * out_dim, out_dim, 1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        x = self.relu1(self.norm1(self.conv1(x)))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(F.interpolate(x, size, mode="bilinear", align_corners=True))
        x = self.conv3(self.relu2(self.norm2(self.conv2(torch.cat(feats, dim=1)))))
        if self.dropout is not None and self.training:
            x = self.dropout(x)
        return x


# --------------------------------------------------------------------------- MLP-Mixer

class _PreNormResidual(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x)) + x


def _mlp(dim: int, expansion: int, dropout: float, token_mixing: bool) -> nn.Sequential:
    # Index 0 and 3 carry the weights (checkpoint keys fn.0 / fn.3); 1, 2, 4 are parameter-free.
    # Token mixing runs over the S frames, which sit on the channel axis of a kernel-1 Conv1d.
    layer = (lambda i, o: nn.Conv1d(i, o, 1)) if token_mixing else nn.Linear
    return nn.Sequential(layer(dim, dim * expansion), nn.GELU(), nn.Dropout(dropout),
                         layer(dim * expansion, dim), nn.Dropout(dropout))


class _MeanOverTime(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


def mlp_mixer(S: int, input_dim: int, dim: int, output_dim: int, depth: int, expansion: int = 4,
              dropout: float = 0.0) -> nn.Sequential:
    """(B, S, input_dim) → (B, output_dim): embed, ``depth`` × (time mixing, channel mixing), pool over time."""
    blocks = [nn.Sequential(_PreNormResidual(dim, _mlp(S, expansion, dropout, True)),
                            _PreNormResidual(dim, _mlp(dim, expansion, dropout, False))) for _ in range(depth)]
    return nn.Sequential(nn.Linear(input_dim, dim), *blocks, nn.LayerNorm(dim), _MeanOverTime(),
                         nn.Linear(dim, output_dim))


def sincos_embed_3d(xyt: torch.Tensor, dim: int) -> torch.Tensor:
    """(..., 3) → (..., 3·dim + 3): per coordinate interleaved sin/cos, then the raw values.

    Published convention: angular frequencies k·1000/dim for k = 0, 2, 4, …, dim−2."""
    freqs = torch.arange(0, dim, 2, device=xyt.device, dtype=xyt.dtype) * (1000.0 / dim)
    ang = xyt[..., None] * freqs                              # (..., 3, dim/2)
    pe = torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(-2)  # sin, cos, sin, cos, ...
    return torch.cat([pe.flatten(-2), xyt], dim=-1)


class DeltaBlock(nn.Module):
    """Per point: (features, correlations, displacement+time) over S frames → (S, 2 + latent) deltas."""

    def __init__(self, cfg: PipsConfig):
        super().__init__()
        self.S = cfg.S
        self.latent_dim = cfg.latent_dim
        self.embed_dim = cfg.embed_dim
        self.to_delta = mlp_mixer(cfg.S, cfg.mixer_input_dim, cfg.mixer_dim, cfg.S * (cfg.latent_dim + 2),
                                  cfg.mixer_depth, cfg.expansion, cfg.dropout)

    def forward(self, ffeats: torch.Tensor, fcorrs: torch.Tensor, flow_t: torch.Tensor) -> torch.Tensor:
        # Published convention: concatenation order features, correlations, embedding.
        x = torch.cat([ffeats, fcorrs, sincos_embed_3d(flow_t, self.embed_dim)], dim=-1)
        return self.to_delta(x).reshape(x.shape[0], self.S, self.latent_dim + 2)


# --------------------------------------------------------------------------- model

class PipsOutput(NamedTuple):
    coords: list            # per iteration, (B, S, N, 2) pixels
    vis: torch.Tensor       # (B, S, N) visibility logits
    feat: torch.Tensor | None      # (B, N, C) query feature used (``return_feat``)
    heatmaps: torch.Tensor | None  # (B, S, I, N, h, w) summed correlation pyramid (``return_heatmaps``)


class Pips(nn.Module):
    def __init__(self, cfg: PipsConfig | str = "published", **overrides):
        super().__init__()
        if isinstance(cfg, str):
            cfg = PipsConfig.size(cfg, **overrides)
        elif overrides:
            cfg = replace(cfg, **overrides)
        self.cfg = cfg
        c = cfg.latent_dim
        self.fnet = PipsEncoder(c, cfg.encoder_widths, cfg.stride, cfg.dropout)
        self.delta_block = DeltaBlock(cfg)
        self.norm = nn.GroupNorm(1, c)
        self.ffeat_updater = nn.Sequential(nn.Linear(c, c), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(c, 1))

    @property
    def stride(self) -> int:
        return self.cfg.stride

    def set_stride(self, stride: int) -> None:
        """Stride changes no weights; the released checkpoint is usually run at 4."""
        self.cfg = replace(self.cfg, stride=stride)
        self.fnet.stride = stride

    def encode(self, rgbs: torch.Tensor) -> torch.Tensor:
        """(B, S, 3, H, W) RGB 0–255 → (B, S, C, H//stride, W//stride). Frames are encoded
        independently (instance norm is per image), so maps can be cached and reused."""
        b, s = rgbs.shape[:2]
        x = 2.0 * (rgbs.reshape(b * s, *rgbs.shape[2:]).to(self.fnet.conv1.weight.dtype) / 255.0) - 1.0
        f = self.fnet(x)
        return f.reshape(b, s, *f.shape[1:])

    @staticmethod
    def sample_features(fmap: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """fmap (B, C, h, w), xy (B, N, 2) in feature-map units → (B, N, C).
        Border padding: an outside query takes the nearest edge feature, as the reference sampler does."""
        return sample_bilinear(fmap, xy[:, :, None, :], padding_mode="border")[..., 0].transpose(1, 2)

    def _pyramid(self, fmaps: torch.Tensor) -> list[torch.Tensor]:
        b, s = fmaps.shape[:2]
        level = fmaps.reshape(b * s, *fmaps.shape[2:])
        pyr = [level]
        for _ in range(self.cfg.corr_levels - 1):
            level = F.avg_pool2d(level, 2, stride=2)
            pyr.append(level)
        return pyr

    def _local_corr(self, pyr: list[torch.Tensor], ffeats: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """(B, S, N, levels·(2r+1)²) correlations of each frame's point feature with its own
        frame's pyramid, in windows around ``coords`` (feature units).

        Sampling the correlation map bilinearly equals the dot product with bilinearly sampled
        features (both linear, both zero outside), so the window is computed from feature
        samples instead of a full (h·w) map per point."""
        b, s, n, c = ffeats.shape
        r = self.cfg.corr_radius
        offsets = window_offsets(r, coords.device, coords.dtype).reshape(1, 1, -1, 2)  # published order
        q = ffeats.reshape(b * s, n, c)
        centres = coords.reshape(b * s, n, 1, 2)
        out = []
        for lvl, fm in enumerate(pyr):
            samples = sample_bilinear(fm, centres / 2 ** lvl + offsets)  # (BS, C, N, K)
            out.append(torch.einsum("bnc,bcnk->bnk", q, samples))
        return (torch.cat(out, dim=-1) / math.sqrt(c)).reshape(b, s, n, -1)

    def _heatmap(self, pyr: list[torch.Tensor], ffeats: torch.Tensor) -> torch.Tensor:
        """(B, S, N, h, w): full correlation maps of all levels, resized to level 0 and summed."""
        b, s, n, c = ffeats.shape
        h, w = pyr[0].shape[-2:]
        q = ffeats.reshape(b * s, n, c)
        total = 0
        for fm in pyr:
            corr = torch.einsum("bnc,bchw->bnhw", q, fm) / math.sqrt(c)
            total = total + F.interpolate(corr, (h, w), mode="bilinear", align_corners=True)
        return total.reshape(b, s, n, h, w)

    def forward(self, xys: torch.Tensor, rgbs: torch.Tensor | None, iters: int = 6,
                feat_init: torch.Tensor | None = None, return_feat: bool = False,
                coords_init: torch.Tensor | None = None, fmaps: torch.Tensor | None = None,
                lock_first: bool | None = None, return_heatmaps: bool = False) -> PipsOutput:
        """Track ``xys`` (B, N, 2), given at frame 0, through ``rgbs`` (B, S, 3, H, W) 0–255.

        ``fmaps``: precomputed ``encode(rgbs)`` (then ``rgbs`` may be None). ``coords_init``:
        (B, S, N, 2) pixel initialisation instead of zero velocity. ``feat_init``: (B, N, C)
        query feature, e.g. carried over between chained windows. ``lock_first``: pin frame 0
        to the query after each update (default: in eval mode, as the reference does at test time).
        """
        cfg = self.cfg
        if fmaps is None:
            fmaps = self.encode(rgbs)
        b, s, c = fmaps.shape[:3]
        if s != cfg.S or c != cfg.latent_dim:
            raise MotionRefineError(f"PIPs window must have S={cfg.S} frames of {cfg.latent_dim} channels, got {s}/{c}")
        n = xys.shape[1]
        if lock_first is None:
            lock_first = not self.training
        stride = float(cfg.stride)
        # Published convention: feature coordinates are pixel coordinates / stride.
        if coords_init is None:
            coords = (xys.to(fmaps.dtype) / stride)[:, None].expand(b, s, n, 2).clone()
        else:
            coords = coords_init.to(fmaps.dtype) / stride
        xy0 = coords[:, 0].clone()  # frame-0 anchor (the reference takes it from the initialisation)
        pyr = self._pyramid(fmaps)
        feat = self.sample_features(fmaps[:, 0], xy0) if feat_init is None else feat_init
        ffeats = feat[:, :, None].expand(b, n, s, c).reshape(b * n, s, c)  # mixer layout (B·N, S, C)
        # Published convention: time channel = linspace(0, S, S), i.e. steps of S/(S−1).
        times = torch.linspace(0, s, s, device=fmaps.device, dtype=fmaps.dtype).reshape(1, s, 1).expand(b * n, s, 1)
        preds, heat = [], []
        for _ in range(iters):
            coords = coords.detach()  # gradients flow through each update, not across iterations
            ff = ffeats.reshape(b, n, s, c).transpose(1, 2)  # (B, S, N, C)
            if return_heatmaps:
                heat.append(self._heatmap(pyr, ff))
            corr = self._local_corr(pyr, ff, coords).transpose(1, 2).reshape(b * n, s, -1)
            disp = (coords - coords[:, :1]).transpose(1, 2).reshape(b * n, s, 2)
            delta = self.delta_block(ffeats, corr, torch.cat([disp, times], dim=-1))
            dfeat = self.ffeat_updater(self.norm(delta[..., 2:].reshape(-1, c))).reshape(b * n, s, c)
            ffeats = ffeats + dfeat
            coords = coords + delta[..., :2].reshape(b, n, s, 2).transpose(1, 2)
            if lock_first:
                coords = torch.cat([xy0[:, None], coords[:, 1:]], dim=1)
            preds.append(coords * stride)
        vis = self.vis_predictor(ffeats).reshape(b, n, s).transpose(1, 2)
        heatmaps = torch.stack(heat, dim=2) if return_heatmaps else None
        return PipsOutput(preds, vis, feat if return_feat else None, heatmaps)


# --------------------------------------------------------------------------- losses

def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1e-6)


def sequence_loss(coord_preds: list, target: torch.Tensor, valid: torch.Tensor | None = None,
                  gamma: float = 0.8) -> torch.Tensor:
    """(1/I)·Σ_i γ^(I−1−i)·masked-mean over (B, S, N) of mean_xy |P_i − P̂| (P̂: (B, S, N, 2))."""
    valid = torch.ones(target.shape[:3], device=target.device) if valid is None else valid.float()
    n = len(coord_preds)
    loss = sum(gamma ** (n - 1 - i) * _masked_mean((p - target).abs().mean(-1), valid)
               for i, p in enumerate(coord_preds))
    return loss / n


def balanced_bce(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BCE over positives (target > 0.95) plus mean BCE over negatives (target < 0.05)."""
    valid = torch.ones_like(target) if valid is None else valid.float()
    loss = F.softplus(-(2.0 * (target > 0.95).float() - 1.0) * logits)
    return _masked_mean(loss, (target > 0.95).float() * valid) + _masked_mean(loss, (target < 0.05).float() * valid)


def score_map_loss(heatmaps: torch.Tensor, target: torch.Tensor, vis: torch.Tensor | None = None,
                   valid: torch.Tensor | None = None) -> torch.Tensor:
    """Balanced BCE of the heatmaps (B, S, I, N, h, w) against a one-hot at the rounded target
    (B, S, N, 2) given in feature units (pixels / stride). Only in-map, valid, visible targets count.

    Each heatmap gets its own target only; the reference code's advanced indexing also marks
    every other kept track's location as positive in each map, which is not reproduced."""
    b, s, i, n, h, w = heatmaps.shape
    maps = heatmaps.permute(0, 1, 3, 2, 4, 5).reshape(b * s * n, i, h * w)
    xy = target.reshape(-1, 2).round().long()
    keep = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    for m in (vis, valid):
        if m is not None:
            keep &= m.reshape(-1) > 0
    if not keep.any():
        return heatmaps.sum() * 0.0
    maps, xy = maps[keep], xy[keep]
    gt = torch.zeros_like(maps)
    gt[torch.arange(len(xy), device=xy.device), :, xy[:, 1] * w + xy[:, 0]] = 1.0
    return balanced_bce(maps, gt)


# --------------------------------------------------------------------------- checkpoints

def read_pips_state(path: str | os.PathLike, expected_sha256: str | None = None) -> tuple[dict, str]:
    """Read a PIPs state_dict from the released layout ({'model_state_dict': ..., 'optimizer_state_dict':
    ...}), a plain state_dict, or one nested under 'state_dict'; strip a 'module.' or 'model.' prefix
    when every key has it. Returns (state, sha256)."""
    p = Path(path)
    if not p.is_file():
        raise AssetMissingError(
            f"checkpoint not found: {p} (looked for {p.resolve()}); get the official PIPs weights from {PIPS_RELEASE}")
    digest = sha256_file(p)
    if expected_sha256 and digest.lower() != expected_sha256.lower():
        raise CheckpointError(f"checkpoint {p} has sha256 {digest}, but the config pins {expected_sha256}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, not a torch file
        raise CheckpointError(f"checkpoint {p} cannot be read by torch.load: {exc}") from exc
    if isinstance(obj, dict):
        for key in ("model_state_dict", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {p} holds no state_dict of tensors (looked at the top level and "
                              f"under 'model_state_dict' / 'state_dict' / 'model')")
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj, digest


def load_pips(path: str | os.PathLike, size: str = "published", expected_sha256: str | None = None,
              stride: int | None = None, **overrides) -> tuple[Pips, str]:
    """Build PIPs ``size`` and load ``path`` strictly. Returns (model in eval mode, sha256)."""
    state, digest = read_pips_state(path, expected_sha256)
    if stride is not None:
        overrides["stride"] = stride
    model = Pips(size, **overrides)
    load_state_strict(model, state, str(path))
    model.eval()
    return model, digest


def save_pips(model: Pips, path: str | os.PathLike) -> str:
    """Write {'model_state_dict': ...} (the released layout, no optimizer), atomically. Returns sha256."""
    return save_atomic({"model_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, path)


# --------------------------------------------------------------------------- long videos

def reanchor_offset(vis: np.ndarray, threshold: float = 0.9, step: float = 0.02) -> int:
    """Window frame to restart from, given one point's visibility probabilities (S,).

    The PIPs chaining demo: the latest frame in [2, S−1] whose visibility exceeds the
    threshold; if none does, lower the threshold by ``step`` and look again."""
    vis = np.asarray(vis, dtype=np.float32)
    cand = vis[2:]
    if cand.size == 0:
        raise MotionRefineError("re-anchoring needs windows of at least 3 frames")
    thr = threshold
    while True:
        hit = np.nonzero(cand > np.float32(thr))[0]
        if hit.size:
            return int(hit[-1]) + 2
        thr -= step


class _FrameFeatures:
    """Lazily encoded per-frame feature maps of one video, dropped once no chain needs them."""

    def __init__(self, model: Pips, frames: np.ndarray, device: torch.device):
        self.model, self.frames, self.device = model, frames, device
        self.cache: dict[int, torch.Tensor] = {}

    def get(self, idx: list[int]) -> torch.Tensor:
        missing = sorted({i for i in idx if i not in self.cache})
        if missing:
            x = torch.from_numpy(np.ascontiguousarray(self.frames[missing])).to(self.device)
            f = self.model.encode(x.permute(0, 3, 1, 2)[None].float())[0]
            self.cache.update(zip(missing, f))
        return torch.stack([self.cache[i] for i in idx])

    def drop_before(self, order: list[int], pos: int) -> None:
        for i in order[:pos]:
            self.cache.pop(i, None)


def _chain(model: Pips, feats: _FrameFeatures, order: list[int], start: np.ndarray, xy: np.ndarray,
           iters: int, chunk: int, threshold: float, step: float, tracks: np.ndarray, vis_out: np.ndarray,
           points: np.ndarray) -> None:
    """Chain windows along ``order`` (frame indices) for ``points``, starting at positions
    ``start`` (into ``order``) with pixel positions ``xy``; writes tracks/vis in place."""
    S, T = model.cfg.S, len(order)
    dev = feats.device
    cur = start.astype(np.int64).copy()
    pos = xy.astype(np.float32).copy()
    feat = [None] * len(points)
    active = np.ones(len(points), dtype=bool)
    while active.any():
        c = int(cur[active].min())
        feats.drop_before(order, c)
        group = np.nonzero(active & (cur == c))[0]
        window = [order[min(c + k, T - 1)] for k in range(S)]  # short tail: repeat the last frame
        fm = feats.get(window)[None]
        s_local = min(S, T - c)
        for g0 in range(0, len(group), chunk):
            g = group[g0:g0 + chunk]
            q = torch.from_numpy(pos[g]).to(dev)[None]
            need = [k for k, j in enumerate(g) if feat[j] is None]
            if need:  # the query's own feature, kept for every later window of its chain
                f0 = model.sample_features(fm[:, 0], q[:, need] / model.stride)[0]
                for k, row in zip(need, f0):
                    feat[g[k]] = row
            f_init = torch.stack([feat[j] for j in g])[None]
            out = model(q, None, iters=iters, feat_init=f_init, fmaps=fm, lock_first=True)
            xy_w = out.coords[-1][0].transpose(0, 1).float().cpu().numpy()       # (n, S, 2)
            v_w = torch.sigmoid(out.vis[0]).transpose(0, 1).float().cpu().numpy()  # (n, S)
            frames_out = order[c:c + s_local]
            tracks[points[g][:, None], frames_out] = xy_w[:, :s_local]
            vis_out[points[g][:, None], frames_out] = v_w[:, :s_local]
            for k, j in enumerate(g):
                si = reanchor_offset(v_w[k], threshold, step)
                cur[j] = c + si
                if cur[j] >= T - 1:
                    # At T−1 the reference runs one more (padded) window whose only frame is
                    # the locked anchor: the position cannot change, so it is skipped here.
                    active[j] = False
                else:
                    pos[j] = xy_w[k, si]


@torch.no_grad()
def track_long(model: Pips, frames: np.ndarray, queries: np.ndarray, S: int = 8, iters: int = 6,
               chunk: int = 256, threshold: float = 0.9, step: float = 0.02,
               device: torch.device | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Track queries (N, 3) = [t, x, y] through frames (T, H, W, 3) uint8 by chaining S-frame windows.

    As the PIPs chaining demo: from the query frame, run one window, keep its positions, and
    restart at the latest window frame (≥ 2) predicted visible with probability > 0.9 (the
    threshold drops by 0.02 until one qualifies), carrying the query's original feature. The
    final window is padded by repeating the last frame. Frames before a query's frame are
    tracked the same way on the time-reversed video (the demo only goes forward).

    Returns tracks (N, T, 2) float32 pixels and visibility probabilities (N, T) float32.
    Resize frames beforehand if needed; coordinates are in the given frames' pixels.
    """
    if S != model.cfg.S:
        raise MotionRefineError(f"model window is S={model.cfg.S}, got S={S}")
    frames = np.asarray(frames)
    queries = np.asarray(queries, dtype=np.float64)
    if frames.ndim != 4 or frames.shape[-1] != 3 or queries.ndim != 2 or queries.shape[1] != 3:
        raise MotionRefineError(f"expected frames (T, H, W, 3) and queries (N, 3), got {frames.shape}, {queries.shape}")
    T, n = len(frames), len(queries)
    qt = queries[:, 0].round().astype(np.int64)
    if n and (qt.min() < 0 or qt.max() >= T):
        raise MotionRefineError(f"query frames must lie in [0, {T - 1}]")
    was_training = model.training
    model.eval()
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    tracks = np.full((n, T, 2), np.nan, dtype=np.float32)
    vis = np.zeros((n, T), dtype=np.float32)
    feats = _FrameFeatures(model, frames, dev)
    try:
        fwd = np.arange(n)
        _chain(model, feats, list(range(T)), qt[fwd], queries[fwd, 1:], iters, chunk, threshold, step,
               tracks, vis, fwd)
        back = np.nonzero(qt > 0)[0]
        if len(back):
            feats.cache.clear()
            order = list(range(T - 1, -1, -1))
            done_fwd = tracks[back, qt[back]].copy()
            vis_fwd = vis[back, qt[back]].copy()
            _chain(model, feats, order, T - 1 - qt[back], queries[back, 1:], iters, chunk, threshold, step,
                   tracks, vis, back)
            # the query frame itself belongs to the forward pass
            tracks[back, qt[back]] = done_fwd
            vis[back, qt[back]] = vis_fwd
    finally:
        model.train(was_training)
    return tracks, vis
