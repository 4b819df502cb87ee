"""Training losses: the supervised sequence loss on pseudo-labels, and the self-supervised
objectives of the baselines (photometric + smoothness, cycle consistency).

The baselines follow UFlow (Jonschkowski et al., ECCV 2020; its repository's defaults in
``uflow_flags.py``), which SMURF (Stone et al., CVPR 2021) keeps for its unsupervised part:

- data term: census transform of 7×7 patches of the grey image on 0–255, each neighbour's
  difference normalised d/√(0.81 + d²), soft Hamming distance Σ (Δ²/(0.1 + Δ²)) over the 48
  neighbours, robust penalty (|x| + 0.01)^0.4 (less its constant 0.01^0.4), masked by the (detached) occlusion mask, the
  3-px patch border, not by out-of-frame targets (UFlow ``census_loss``, weight 1);
- occlusions: the forward-backward test (UFlow's ``brox`` option = UnFlow's constants,
  ‖F_f + F_b(x+F_f)‖² > 0.01 (‖F_f‖² + ‖F_b(x+F_f)‖²) + 0.5), stop-gradient;
- smoothness: edge-aware, exp(−150 · mean_RGB |∂I|) on [0, 1] images (UFlow's
  ``smoothness_edge_constant`` 150, ``exponential`` weighting), robust L1 √(x² + 0.001²) of
  the flow's second derivatives (``weight_smooth2`` 2, ``weight_smooth1`` 0), at pyramid
  level 2 (``smoothness_at_level`` 2: flow and image at 1/4 resolution, flow in that level's
  pixels); first order (image gradients at stride 1) is the alternative;
- both directions, each term averaged over the two (UFlow divides by its number of pairs).
The cycle baseline adds UnFlow's forward-backward consistency term (weight 0.2, Meister et
al., AAAI 2018, relative to the census data term) on the non-occluded pixels to the same
census data term, without the smoothness term (so the two baselines differ in one term each
from the census anchor).

Every masked loss is reduced PER SAMPLE (mean over that sample's valid pixels, then the
mean over samples; a sample without valid pixels contributes 0). The official refinement
code instead broadcasts a (B,1,H,W) mask against (B,2,H,W) errors, which weights each
sample by the batch-average mask and divides by all pixels; we do not reproduce that.

Tensors: flows (B, 2, H, W); images (B, 3, H, W) 0–255; masks/weights (B, H, W).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from motionrefine.flow.cycle import fb_consistency, warp_backward_flow
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


def smoothness_loss(flow: torch.Tensor, image: torch.Tensor, edge_scale: float = 150.0, order: int = 2,
                    level: int = 0) -> torch.Tensor:
    """Edge-aware smoothness (UFlow): mean over x and y of w · ρ(∂ⁿF), w = exp(−edge_scale ·
    mean_RGB |∂I|) on [0, 1] images, ρ(x) = √(x² + 0.001²) − 0.001 (UFlow's robust L1 less its
    constant, so a flow without derivative costs exactly 0; same gradient).

    ``order`` 1: ∂F and ∂I between neighbours. ``order`` 2: ∂²F = F(x+2) − 2F(x+1) + F(x) with
    weights from the stride-2 image difference I(x+2) − I(x) spanning the same pixels (as
    UFlow). ``level`` L > 0: flow and image area-downsampled by 2^L first, the flow divided by
    2^L (UFlow applies it at level 2). Per sample (mean over channels and pixels), then samples.
    """
    if order not in (1, 2):
        raise ValueError(f"smoothness order must be 1 or 2, got {order}")
    img = image.float() / 255.0
    if level > 0:
        f = 2 ** level
        flow = F.avg_pool2d(flow, f) / f
        img = F.avg_pool2d(img, f)
    if order == 1:
        gfx = flow[..., :, 1:] - flow[..., :, :-1]
        gfy = flow[..., 1:, :] - flow[..., :-1, :]
        gix = img[..., :, 1:] - img[..., :, :-1]
        giy = img[..., 1:, :] - img[..., :-1, :]
    else:
        gfx = flow[..., :, 2:] - 2 * flow[..., :, 1:-1] + flow[..., :, :-2]
        gfy = flow[..., 2:, :] - 2 * flow[..., 1:-1, :] + flow[..., :-2, :]
        gix = img[..., :, 2:] - img[..., :, :-2]
        giy = img[..., 2:, :] - img[..., :-2, :]
    terms = []
    for gf, gi in ((gfx, gix), (gfy, giy)):
        w = edge_weights(gi, edge_scale)
        rho = torch.sqrt(gf * gf + 1e-6) - 1e-3
        terms.append((w[:, None] * rho).flatten(1).mean(1).mean())
    return (terms[0] + terms[1]) / 2


def edge_weights(image_grad: torch.Tensor, edge_scale: float) -> torch.Tensor:
    """exp(−edge_scale · mean_RGB |∂I|) (UFlow's ``exponential`` edge weighting), (B, H, W)."""
    return torch.exp(-(edge_scale * image_grad.abs()).mean(1))


# UFlow's census constants.
CENSUS_PATCH = 7
GREY = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale's weights, as UFlow uses


def census_transform(image: torch.Tensor, patch: int = CENSUS_PATCH) -> torch.Tensor:
    """(B, 3, H, W) 0–255 → (B, patch², H, W): for each neighbour n of the patch, d/√(0.81 + d²)
    with d = grey(n) − grey(centre) on 0–255 (zero padding; the border is masked by the loss)."""
    w = image.new_tensor(GREY).view(1, 3, 1, 1)
    grey = (image.float() * w).sum(1, keepdim=True)
    b, _, h, wd = grey.shape
    neigh = F.unfold(grey, patch, padding=patch // 2).view(b, patch * patch, h, wd)
    d = neigh - grey
    return d / torch.sqrt(0.81 + d * d)


def soft_hamming(t1: torch.Tensor, t2: torch.Tensor, thresh: float = 0.1) -> torch.Tensor:
    """Σ over the census channels of Δ²/(thresh + Δ²), (B, H, W) (UFlow's soft Hamming distance)."""
    sq = (t1 - t2) ** 2
    return (sq / (thresh + sq)).sum(1)


def border_mask(b: int, h: int, w: int, width: int, device=None) -> torch.Tensor:
    """True except within ``width`` px of the frame's edge (where the census patch leaves it)."""
    m = torch.zeros(b, h, w, dtype=torch.bool, device=device)
    m[:, width:h - width, width:w - width] = True
    return m


def census_loss(image1: torch.Tensor, image2: torch.Tensor, flow: torch.Tensor,
                mask: torch.Tensor | None = None, patch: int = CENSUS_PATCH) -> torch.Tensor:
    """UFlow's census loss of I_t against I_{t+1} warped back by ``flow``: (|hamming| + 0.01)^0.4
    per pixel, masked by ``mask`` (True = visible) and the patch border; reduced per sample.
    Out-of-frame targets are not masked here (see the comment below)."""
    warped = backward_warp(image2.float(), flow)
    ham = soft_hamming(census_transform(image1, patch), census_transform(warped, patch))
    # UFlow's (|x| + 0.01)^0.4, less its value at 0 so a perfect match costs 0 (same gradient).
    per_px = (ham.abs() + 0.01).pow(0.4) - 0.01 ** 0.4
    b, _, h, w = flow.shape
    # No in-frame mask (as UFlow): a flow that points out of the frame meets the zero padding
    # and costs, instead of escaping the loss; where the occlusion mask is on, the forward-
    # backward test already excludes such pixels (the backward flow samples zeros there).
    m = border_mask(b, h, w, patch // 2, flow.device)
    if mask is not None:
        m = m & mask.bool()
    return masked_mean_per_sample(per_px, m)


def cycle_loss(flow_fw: torch.Tensor, flow_bw: torch.Tensor, mask: torch.Tensor | None = None,
               eps: float = 1e-3) -> torch.Tensor:
    """‖F_f(x) + F_b(x + F_f(x))‖ (smoothed near 0: √(d² + ε²) − ε, for finite gradients),
    over pixels whose x + F_f(x) is inside the frame (∧ ``mask``); reduced per sample.
    Alone it is minimised by zero flow; the cycle baseline anchors it (:func:`cycle_objective`)."""
    d = flow_fw + warp_backward_flow(flow_fw, flow_bw)
    per_px = torch.sqrt(d.pow(2).sum(1) + eps * eps) - eps
    m = inside_frame(flow_fw.detach())
    if mask is not None:
        m = m & mask.bool()
    return masked_mean_per_sample(per_px, m)


# ------------------------------------------------------------------ the two baseline objectives

class SelfSupWeights(NamedTuple):
    """Weights and constants of the baselines; defaults are the published values (module doc)."""

    census: float = 1.0          # UFlow weight_census
    smooth: float = 2.0          # UFlow weight_smooth2 (second order)
    smooth_order: int = 2
    smooth_level: int = 2        # UFlow smoothness_at_level
    edge_scale: float = 150.0    # UFlow smoothness_edge_constant, on [0, 1] images
    cycle: float = 0.2           # UnFlow λ_c
    occlusion_alpha: float = 0.01  # UFlow 'brox' / UnFlow α1 (squared norms)
    occlusion_beta: float = 0.5    # UnFlow α2


def occlusion_masks(flow_fw: torch.Tensor, flow_bw: torch.Tensor, w: SelfSupWeights = SelfSupWeights()
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(visible in the forward pair, visible in the backward pair), forward-backward test on
    the detached flows, (B, H, W) bool."""
    ff, fb = flow_fw.detach(), flow_bw.detach()
    vis_f = fb_consistency(ff, fb, w.occlusion_alpha, w.occlusion_beta, squared=True)[0]
    vis_b = fb_consistency(fb, ff, w.occlusion_alpha, w.occlusion_beta, squared=True)[0]
    return vis_f, vis_b


def _census_both_ways(image1, image2, flow_fw, flow_bw, vis_f, vis_b) -> torch.Tensor:
    """The baselines' shared data term: mean of the two directions' occlusion-masked census losses."""
    return (census_loss(image1, image2, flow_fw, vis_f) + census_loss(image2, image1, flow_bw, vis_b)) / 2


def photometric_objective(image1: torch.Tensor, image2: torch.Tensor, flow_fw: torch.Tensor, flow_bw: torch.Tensor,
                          vis_f: torch.Tensor, vis_b: torch.Tensor, w: SelfSupWeights = SelfSupWeights()
                          ) -> torch.Tensor:
    """The photometric baseline (UFlow): census · mean of the two directions' occlusion-masked
    census losses + smooth · mean of their edge-aware smoothness."""
    data = _census_both_ways(image1, image2, flow_fw, flow_bw, vis_f, vis_b)
    smooth = (smoothness_loss(flow_fw, image1, w.edge_scale, w.smooth_order, w.smooth_level)
              + smoothness_loss(flow_bw, image2, w.edge_scale, w.smooth_order, w.smooth_level)) / 2
    return w.census * data + w.smooth * smooth


def cycle_objective(image1: torch.Tensor, image2: torch.Tensor, flow_fw: torch.Tensor, flow_bw: torch.Tensor,
                    vis_f: torch.Tensor, vis_b: torch.Tensor, w: SelfSupWeights = SelfSupWeights()) -> torch.Tensor:
    """The cycle baseline (UnFlow's data + consistency terms): census · mean of the two
    directions' occlusion-masked census losses + cycle · mean of their cycle losses on the
    non-occluded pixels. The census anchor is what keeps zero flow from being optimal."""
    data = _census_both_ways(image1, image2, flow_fw, flow_bw, vis_f, vis_b)
    cyc = (cycle_loss(flow_fw, flow_bw, vis_f) + cycle_loss(flow_bw, flow_fw, vis_b)) / 2
    return w.census * data + w.cycle * cyc
