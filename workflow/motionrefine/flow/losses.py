"""Training losses: the supervised sequence loss on pseudo-labels, and the self-supervised
objectives of the baselines (photometric + smoothness, cycle consistency).

Every masked loss is reduced PER SAMPLE (mean over that sample's valid pixels, then the
mean over samples; a sample without valid pixels contributes 0). The official refinement
code instead broadcasts a (B,1,H,W) mask against (B,2,H,W) errors, which weights each
sample by the batch-average mask and divides by all pixels; we do not reproduce that.

Tensors: flows (B, 2, H, W); images (B, 3, H, W) 0–255; masks/weights (B, H, W).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from motionrefine.flow.cycle import warp_backward_flow
from motionrefine.core.geometry import backward_warp, flow_magnitude, inside_frame


def sequence_weights(n: int, gamma: float = 0.85) -> list[float]:
    """γ^(N−i) for iterations i = 1..N: the last prediction has weight 1."""
    return [gamma ** (n - 1 - i) for i in range(n)]


def masked_mean_per_sample(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """values, mask: (B, H, W) (mask bool or non-negative weights). Σ m·v / Σ m per sample,
    0 for samples with Σ m = 0, then the mean over samples."""
    m = mask.to(values.dtype)
    num = (values * m).flatten(1).sum(1)
    den = m.flatten(1).sum(1)
    per_sample = torch.where(den > 0, num / den.clamp(min=1e-12), torch.zeros_like(num))
    return per_sample.mean()


def label_mask(label: torch.Tensor, valid: torch.Tensor, max_flow: float = 400.0) -> torch.Tensor:
    """valid ∧ finite label ∧ ‖label‖ < max_flow, (B, H, W) bool."""
    finite = torch.isfinite(label).all(1)
    mag = flow_magnitude(torch.nan_to_num(label))
    return valid.bool() & finite & (mag < max_flow)


def sequence_loss(preds: Sequence[torch.Tensor], label: torch.Tensor, valid: torch.Tensor,
                  weight: torch.Tensor | None = None, gamma: float = 0.85,
                  max_flow: float = 400.0) -> tuple[torch.Tensor, dict]:
    """RAFT sequence L1 loss Σ_i γ^(N−i) · L_i on a sparse label.

    L_i: per-pixel L1 error averaged over (u, v), reduced per sample over the valid pixels
    (weighted by ``weight`` when given: Σ w·e / Σ w over valid pixels), then averaged over
    samples. Pixels with a non-finite label or ‖label‖ ≥ max_flow are excluded.
    Returns (loss, metrics of the last prediction: epe, 1px/3px/5px, valid fraction).
    """
    mask = label_mask(label, valid, max_flow)
    m = mask.float() if weight is None else mask.float() * weight.float()
    target = torch.nan_to_num(label)
    loss = preds[0].new_zeros(())
    for w_i, pred in zip(sequence_weights(len(preds), gamma), preds):
        err = (pred - target).abs().mean(1)
        loss = loss + w_i * masked_mean_per_sample(err, m)
    with torch.no_grad():
        epe = flow_magnitude(preds[-1].detach() - target)[mask]
        n = max(int(epe.numel()), 1)
        metrics = {
            "epe": float(epe.sum()) / n if epe.numel() else float("nan"),
            "1px": float((epe < 1).sum()) / n,
            "3px": float((epe < 3).sum()) / n,
            "5px": float((epe < 5).sum()) / n,
            "valid_fraction": float(mask.float().mean()),
            "n_valid": int(epe.numel()),  # to pool epe over batch slices (threads, ranks)
        }
    return loss, metrics


# ------------------------------------------------------------------ self-supervised baselines

def charbonnier(x: torch.Tensor, eps: float = 1e-3, q: float = 0.45) -> torch.Tensor:
    """Generalised Charbonnier (x² + ε²)^q − ε^(2q): robust, smooth at 0, exactly 0 at x = 0."""
    return (x * x + eps * eps).pow(q) - eps ** (2 * q)


def ssim_dissimilarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1 − SSIM)/2 per pixel over 3×3 windows (reflection padding), images in [0, 1];
    averaged over channels → (B, H, W)."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x = F.avg_pool2d(x, 3, 1)
    mu_y = F.avg_pool2d(y, 3, 1)
    sxx = F.avg_pool2d(x * x, 3, 1) - mu_x ** 2
    syy = F.avg_pool2d(y * y, 3, 1) - mu_y ** 2
    sxy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return ((1 - ssim) / 2).clamp(0, 1).mean(1)


def photometric_loss(image1: torch.Tensor, image2: torch.Tensor, flow: torch.Tensor,
                     mask: torch.Tensor | None = None, ssim_weight: float = 0.0,
                     eps: float = 1e-3, q: float = 0.45) -> torch.Tensor:
    """Occlusion-masked photometric loss between I_t and I_{t+1} warped back by ``flow``.

    Per pixel: (1 − s)·mean_RGB charbonnier(I_t − Î) + s·(1 − SSIM)/2 with s = ssim_weight and
    images scaled to [0, 1]. Masked by ``mask`` (True = visible, e.g. not occluded) and by
    x + flow(x) landing inside the frame; reduced per sample.
    """
    i1 = image1.float() / 255.0
    i2 = image2.float() / 255.0
    warped = backward_warp(i2, flow)
    per_px = charbonnier(i1 - warped, eps, q).mean(1)
    if ssim_weight > 0:
        per_px = (1 - ssim_weight) * per_px + ssim_weight * ssim_dissimilarity(i1, warped)
    m = inside_frame(flow.detach())
    if mask is not None:
        m = m & mask.bool()
    return masked_mean_per_sample(per_px, m)


def smoothness_loss(flow: torch.Tensor, image: torch.Tensor, edge_scale: float = 1.0) -> torch.Tensor:
    """Edge-aware first-order smoothness: mean of |∂F|·exp(−edge_scale·mean_RGB|∂I|) over x and y
    (images scaled to [0, 1]); per sample, then over samples."""
    img = image.float() / 255.0
    dfx = (flow[..., :, 1:] - flow[..., :, :-1]).abs().mean(1)
    dfy = (flow[..., 1:, :] - flow[..., :-1, :]).abs().mean(1)
    wx = torch.exp(-edge_scale * (img[..., :, 1:] - img[..., :, :-1]).abs().mean(1))
    wy = torch.exp(-edge_scale * (img[..., 1:, :] - img[..., :-1, :]).abs().mean(1))
    return (dfx * wx).flatten(1).mean(1).mean() + (dfy * wy).flatten(1).mean(1).mean()


def cycle_loss(flow_fw: torch.Tensor, flow_bw: torch.Tensor, mask: torch.Tensor | None = None,
               eps: float = 1e-3) -> torch.Tensor:
    """‖F_f(x) + F_b(x + F_f(x))‖ (smoothed near 0: √(d² + ε²) − ε, for finite gradients),
    over pixels whose x + F_f(x) is inside the frame (∧ ``mask``); reduced per sample."""
    d = flow_fw + warp_backward_flow(flow_fw, flow_bw)
    per_px = torch.sqrt(d.pow(2).sum(1) + eps * eps) - eps
    m = inside_frame(flow_fw.detach())
    if mask is not None:
        m = m & mask.bool()
    return masked_mean_per_sample(per_px, m)
