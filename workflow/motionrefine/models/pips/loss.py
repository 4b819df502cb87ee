"""Losses of the PIPs tracker: coordinate sequence loss, balanced visibility BCE and the
score-map loss on the correlation heatmaps."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
