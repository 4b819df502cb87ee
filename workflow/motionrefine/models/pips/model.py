"""The PIPs network, in four parts:

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
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from motionrefine.core.errors import MotionRefineError
from motionrefine.core.geometry import sample_bilinear
from motionrefine.models.raft.corr import window_offsets
from motionrefine.models.raft.extractor import ResidualBlock


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
