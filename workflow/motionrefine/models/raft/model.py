"""RAFT (Teed & Deng, ECCV 2020): encoders + correlation + iterative GRU refinement.

The forward pass is split so that callers that process many pairs of one video can
encode every frame once (``encode_features``/``encode_context``) and reuse the maps for
pairs (t−1, t), (t, t+1) and for both time directions (``refine``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from motionrefine.core.geometry import coords_grid
from motionrefine.models.raft.corr import AlternateCorrBlock, CorrBlock
from motionrefine.models.raft.extractor import BasicEncoder, SmallEncoder
from motionrefine.models.raft.update import BasicUpdateBlock, SmallUpdateBlock


@dataclass(frozen=True)
class RAFTConfig:
    small: bool
    hidden_dim: int
    context_dim: int
    corr_levels: int = 4
    corr_radius: int = 4

    @classmethod
    def variant(cls, name: str) -> "RAFTConfig":
        if name == "small":
            return cls(small=True, hidden_dim=96, context_dim=64, corr_radius=3)
        if name == "large":
            return cls(small=False, hidden_dim=128, context_dim=128, corr_radius=4)
        raise ValueError(f"unknown RAFT variant {name!r} (expected 'small' or 'large')")


class RAFT(nn.Module):
    def __init__(self, variant: str = "small", dropout: float = 0.0, alternate_corr_pixels: int | None = None):
        """``alternate_corr_pixels``: use the on-demand correlation when the 1/8-scale
        feature map has more pixels than this (None: never)."""
        super().__init__()
        cfg = RAFTConfig.variant(variant)
        self.cfg = cfg
        self.variant = variant
        self.alternate_corr_pixels = alternate_corr_pixels
        corr_planes = cfg.corr_levels * (2 * cfg.corr_radius + 1) ** 2
        if cfg.small:
            self.fnet = SmallEncoder(128, "instance", dropout)
            self.cnet = SmallEncoder(cfg.hidden_dim + cfg.context_dim, "none", dropout)
            self.update_block = SmallUpdateBlock(corr_planes, cfg.hidden_dim, cfg.context_dim)
        else:
            self.fnet = BasicEncoder(256, "instance", dropout)
            self.cnet = BasicEncoder(cfg.hidden_dim + cfg.context_dim, "batch", dropout)
            self.update_block = BasicUpdateBlock(corr_planes, cfg.hidden_dim, cfg.context_dim)

    def freeze_bn(self) -> None:
        """Keep batch-norm statistics fixed (fine-tuning batches are too small to estimate them)."""
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()

    @staticmethod
    def normalise(images: torch.Tensor) -> torch.Tensor:
        """0–255 RGB → [−1, 1], the range the published weights were trained on."""
        return 2.0 * (images / 255.0) - 1.0

    def encode_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in 0–255 → matching features (N, C, H/8, W/8), float32."""
        return self.fnet(self.normalise(images)).float()

    def encode_context(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) in 0–255 → GRU initial state and context input."""
        ctx = self.cnet(self.normalise(images))
        net, inp = torch.split(ctx, [self.cfg.hidden_dim, self.cfg.context_dim], dim=1)
        return torch.tanh(net), torch.relu(inp)

    def make_corr(self, fmap1: torch.Tensor, fmap2: torch.Tensor):
        h, w = fmap1.shape[-2:]
        if self.alternate_corr_pixels is not None and h * w > self.alternate_corr_pixels:
            return AlternateCorrBlock(fmap1, fmap2, self.cfg.corr_levels, self.cfg.corr_radius)
        return CorrBlock(fmap1, fmap2, self.cfg.corr_levels, self.cfg.corr_radius)

    def upsample(self, flow: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """1/8-scale flow → full resolution (bilinear for small, convex combination for large)."""
        b, _, h, w = flow.shape
        if mask is None:
            return 8.0 * F.interpolate(flow, size=(8 * h, 8 * w), mode="bilinear", align_corners=True)
        # Each full-res pixel is a softmax-weighted mix of the 3×3 coarse neighbours.
        mask = torch.softmax(mask.view(b, 1, 9, 8, 8, h, w), dim=2)
        neigh = F.unfold(8.0 * flow, [3, 3], padding=1).view(b, 2, 9, 1, 1, h, w)
        up = torch.sum(mask * neigh, dim=2)  # (B, 2, 8, 8, H, W)
        return up.permute(0, 1, 4, 2, 5, 3).reshape(b, 2, 8 * h, 8 * w)

    def refine(self, fmap1, fmap2, net, inp, iters: int = 12, flow_init: torch.Tensor | None = None,
               all_iters: bool = True):
        """Iterative updates. Returns (list of full-res flows per iteration, final 1/8-scale flow);
        with ``all_iters=False`` the list holds only the last iteration (inference)."""
        corr_fn = self.make_corr(fmap1, fmap2)
        b, _, h, w = fmap1.shape
        coords0 = coords_grid(b, h, w, fmap1.device)
        coords1 = coords0.clone()
        if flow_init is not None:
            coords1 = coords1 + flow_init
        preds = []
        for i in range(iters):
            coords1 = coords1.detach()  # gradients flow through each update, not across iterations
            corr = corr_fn(coords1)
            net, mask, delta = self.update_block(net, inp, corr, coords1 - coords0)
            coords1 = coords1 + delta
            if all_iters or i == iters - 1:
                preds.append(self.upsample(coords1 - coords0, mask))
        return preds, coords1 - coords0

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, iters: int = 12,
                flow_init: torch.Tensor | None = None, test_mode: bool = False):
        """image1, image2: (B, 3, H, W) RGB 0–255, H and W multiples of 8.

        Training: list of full-resolution flow predictions, one per iteration.
        ``test_mode``: (flow at 1/8 scale, final full-resolution flow), like the reference.
        """
        fmaps = self.encode_features(torch.cat([image1, image2], dim=0))
        fmap1, fmap2 = fmaps.chunk(2, dim=0)
        net, inp = self.encode_context(image1)
        preds, low = self.refine(fmap1, fmap2, net, inp, iters, flow_init, all_iters=not test_mode)
        if test_mode:
            return low, preds[-1]
        return preds
