"""Cycle verification of optical flow: which pixels become pseudo-labels.

For a pair (t, t+1) with forward flow F_f and backward flow F_b, pixel x is kept iff

1. forward-backward: ‖F_f(x) + Ŵ_b(x)‖ < α·(‖F_f(x)‖ + ‖Ŵ_b(x)‖) + β, with
   Ŵ_b(x) = F_b(x + F_f(x)) sampled bilinearly (``geometry.sample_bilinear``, zero padding);
2. colour constancy: mean over RGB of |I_t(x) − I_{t+1}(x + F_f(x))| < c, images in [−0.5, 0.5]
   (``colour_norm="gradient"``: that error over the local image gradient, an estimate in px);
3. x + F_f(x) lies inside the frame and ‖F_f(x)‖ < max_flow;
4. every value involved is finite.

Norms are plain (not squared) L2 norms. All tensors are (B, C, H, W) torch tensors and
every sample of a batch is an independent pair.

Rejection reasons (``REASONS``) are evaluated independently, so one pixel can fail several
(they overlap, and the per-reason counts can sum to more than the rejected pixels), with
one exception: a ``non_finite`` pixel is counted under ``non_finite`` only, because the
other tests are meaningless for it. A switched-off check never rejects anything.

Tracks are verified forward-backward over a window by ``track.chain.verify_tracks``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from motionrefine.core.errors import MotionRefineError
from motionrefine.core.geometry import coords_grid, flow_magnitude, sample_bilinear

REASONS = ("inconsistent", "colour", "out_of_frame", "non_finite")
COLOUR_NORMS = ("raw", "gradient")
DEFAULT_SPEED_EDGES = (0.0, 1.0, 2.0, 4.5, math.inf)

# Ablation presets: which of the two verification tests run. In-frame, max_flow and
# finiteness are always required (a label pointing outside the frame cannot be checked).
CHECK_PRESETS = {
    "none": (False, False),
    "fb": (True, False),
    "fb+colour": (True, True),
}


@dataclass(frozen=True)
class CycleThresholds:
    alpha: float = 0.002
    beta: float = 0.1
    colour: float = 0.005
    max_flow: float = 400.0
    checks: str = "fb+colour"
    # "raw": ``colour`` bounds the colour error; "gradient": it bounds the gradient-normalised
    # error (an estimate of the flow error in px, see ``colour_error``).
    colour_norm: str = "raw"

    def __post_init__(self):
        if self.colour_norm not in COLOUR_NORMS:
            raise MotionRefineError(f"colour_norm must be one of {COLOUR_NORMS}, got {self.colour_norm!r}")
        resolve_checks(self.checks)
        if self.alpha < 0 or self.beta < 0 or self.colour < 0 or self.max_flow <= 0:
            raise MotionRefineError(f"cycle thresholds must be non-negative (max_flow > 0), got {self}")


def resolve_checks(checks: str) -> tuple[bool, bool]:
    """'none' | 'fb' | 'fb+colour' → (forward-backward on, colour on)."""
    try:
        return CHECK_PRESETS[checks]
    except KeyError:
        raise MotionRefineError(f"unknown checks {checks!r}; expected one of {sorted(CHECK_PRESETS)}") from None


def check_speed_edges(edges: Sequence[float]) -> list[float]:
    e = [float(x) for x in edges]
    if len(e) < 2 or any(b <= a for a, b in zip(e, e[1:])):
        raise MotionRefineError(f"speed bin edges must be increasing with at least 2 entries, got {list(edges)}")
    return e


def speed_bin_index(speed: torch.Tensor, edges: Sequence[float]) -> torch.Tensor:
    """Bin index k with edges[k] <= speed < edges[k+1]; −1 outside [edges[0], edges[-1]) or non-finite."""
    e = torch.tensor(check_speed_edges(edges), dtype=speed.dtype, device=speed.device)
    idx = torch.bucketize(speed, e, right=True) - 1
    bad = (idx < 0) | (idx >= len(e) - 1) | ~torch.isfinite(speed)
    return torch.where(bad, torch.full_like(idx, -1), idx)


def _finite_flow(flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(flow with non-finite entries zeroed, (B, H, W) mask of pixels whose flow is finite)."""
    fin = torch.isfinite(flow)
    ok = fin[:, 0] & fin[:, 1]  # not .all(dim=1): a reduction over the 2-long axis is slow on CPU
    return torch.where(fin, flow, torch.zeros_like(flow)), ok


def warp_backward_flow(flow_fw: torch.Tensor, flow_bw: torch.Tensor) -> torch.Tensor:
    """Ŵ_b(x) = F_b(x + F_f(x)), bilinear with zero padding. (B, 2, H, W)."""
    b, _, h, w = flow_fw.shape
    return sample_bilinear(flow_bw, coords_grid(b, h, w, flow_fw.device, flow_fw.dtype) + flow_fw)


def fb_consistency(flow_fw: torch.Tensor, flow_bw: torch.Tensor, alpha: float = 0.002, beta: float = 0.1,
                   squared: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward-backward test. Returns (consistent (B,H,W) bool, error, threshold).

    The threshold uses ‖F_b‖ at the displaced position x + F_f(x) (test 1 of the module doc);
    the official refinement code used ‖F_b(x)‖ at the same pixel x instead.
    ``squared=True`` gives the UnFlow form (squared norms; UnFlow's α=0.01, β=0.5), used for
    the occlusion mask of the photometric baseline.
    """
    wb = warp_backward_flow(flow_fw, flow_bw)
    if squared:
        err = (flow_fw + wb).pow(2).sum(1)
        thr = alpha * (flow_fw.pow(2).sum(1) + wb.pow(2).sum(1)) + beta
    else:
        err = flow_magnitude(flow_fw + wb)
        thr = alpha * (flow_magnitude(flow_fw) + flow_magnitude(wb)) + beta
    return err < thr, err, thr


# Gradient floor of the normalised colour error, per px on [−0.5, 0.5] images (~5 grey levels):
# keeps the estimate finite on flat pixels, where any flow explains the colour equally well.
GRADIENT_FLOOR = 0.02


def image_gradient(image: torch.Tensor) -> torch.Tensor:
    """Mean over RGB of the central-difference gradient magnitude of a [−0.5, 0.5] image. (B, H, W)."""
    padded = torch.nn.functional.pad(image, (1, 1, 1, 1), mode="replicate")
    gx = (padded[:, :, 1:-1, 2:] - padded[:, :, 1:-1, :-2]) / 2
    gy = (padded[:, :, 2:, 1:-1] - padded[:, :, :-2, 1:-1]) / 2
    return torch.hypot(gx, gy).mean(1)


def colour_error(image1: torch.Tensor, image2: torch.Tensor, flow_fw: torch.Tensor,
                 normalise: bool = False) -> torch.Tensor:
    """Mean over RGB of |I_t(x) − I_{t+1}(x + F_f(x))| with 0–255 images rescaled to [−0.5, 0.5]. (B, H, W).

    ``normalise``: divide by the local gradient magnitude of I_t (floored at GRADIENT_FLOOR). To
    first order a flow error δ leaves a colour error |∇I·δ|, so the quotient estimates the flow
    error in pixels; the raw error instead passes flat pixels (small error whatever the flow) and
    fails textured ones (large error for a small δ)."""
    i1 = image1.to(flow_fw.dtype) / 255.0 - 0.5
    i2 = image2.to(flow_fw.dtype) / 255.0 - 0.5
    b, _, h, w = flow_fw.shape
    warped = sample_bilinear(i2, coords_grid(b, h, w, flow_fw.device, flow_fw.dtype) + flow_fw)
    err = (i1 - warped).abs().mean(1)
    if normalise:
        err = err / image_gradient(i1).clamp_min(GRADIENT_FLOOR)
    return err


@dataclass
class CycleResult:
    """Masks are (B, H, W) bool; ``rejected[reason]`` per ``REASONS`` (see the module doc)."""

    keep: torch.Tensor
    rejected: dict[str, torch.Tensor]
    fb_error: torch.Tensor | None = None
    fb_threshold: torch.Tensor | None = None
    colour_error: torch.Tensor | None = None
    speed: torch.Tensor | None = None  # ‖F_f‖, NaN where F_f is not finite
    thresholds: CycleThresholds = field(default_factory=CycleThresholds)

    def stats(self, speed_edges: Sequence[float] = DEFAULT_SPEED_EDGES) -> dict[str, torch.Tensor]:
        return pair_stats(self, speed_edges)


def verify_flow(flow_fw: torch.Tensor, flow_bw: torch.Tensor, image1: torch.Tensor | None = None,
                image2: torch.Tensor | None = None, alpha: float = 0.002, beta: float = 0.1,
                colour: float = 0.005, max_flow: float = 400.0, checks: str = "fb+colour",
                colour_norm: str = "raw") -> CycleResult:
    """Cycle-verify a batch of pairs.

    flow_fw, flow_bw: (B, 2, H, W), frame t → t+1 and t+1 → t. image1, image2: (B, 3, H, W)
    0–255 RGB (uint8 or float), needed only when the colour check is on.
    """
    th = CycleThresholds(alpha, beta, colour, max_flow, checks, colour_norm)
    use_fb, use_colour = resolve_checks(checks)
    if flow_fw.shape != flow_bw.shape or flow_fw.dim() != 4 or flow_fw.shape[1] != 2:
        raise MotionRefineError(f"flows must both be (B, 2, H, W), got {tuple(flow_fw.shape)} and {tuple(flow_bw.shape)}")
    if use_colour and (image1 is None or image2 is None):
        raise MotionRefineError("the colour check needs both images")
    flow_fw = flow_fw.float()
    flow_bw = flow_bw.float()
    # Sanitise first so a NaN in one pixel cannot leak into its neighbours through sampling.
    ff, fw_ok = _finite_flow(flow_fw)
    fb_, bw_ok = _finite_flow(flow_bw)
    finite = fw_ok.clone()
    # A non-finite backward vector taints every position that samples it.
    if not bool(bw_ok.all()):
        finite &= sample_bilinear((~bw_ok)[:, None].float(), coords_grid(*ff.shape[:1], *ff.shape[2:], ff.device) + ff)[:, 0] == 0

    speed = flow_magnitude(ff)
    b, _, h, w = ff.shape
    target = coords_grid(b, h, w, ff.device, ff.dtype) + ff
    in_frame = (target[:, 0] >= 0) & (target[:, 0] <= w - 1) & (target[:, 1] >= 0) & (target[:, 1] <= h - 1)
    out_of_frame = ~(in_frame & (speed < max_flow))

    zeros = torch.zeros_like(finite)
    fb_bad, err, thr = zeros, None, None
    if use_fb:
        ok, err, thr = fb_consistency(ff, fb_, alpha, beta)
        fb_bad = ~ok
    col_bad, cerr = zeros, None
    if use_colour:
        cerr = colour_error(image1, image2, ff, normalise=colour_norm == "gradient")
        finite &= torch.isfinite(cerr) & torch.isfinite(image1.float()).all(1)
        col_bad = ~(cerr < colour)

    non_finite = ~finite
    rejected = {
        "inconsistent": fb_bad & finite,
        "colour": col_bad & finite,
        "out_of_frame": out_of_frame & finite,
        "non_finite": non_finite,
    }
    keep = finite & ~fb_bad & ~col_bad & ~out_of_frame
    return CycleResult(keep, rejected, err, thr, cerr, torch.where(fw_ok, speed, torch.full_like(speed, math.nan)), th)


def pair_stats(result: CycleResult, speed_edges: Sequence[float] = DEFAULT_SPEED_EDGES) -> dict[str, torch.Tensor]:
    """Per-pair statistics of a :class:`CycleResult` (B rows).

    kept_fraction (B,): kept / all pixels. pixels_by_bin, kept_by_bin (B, K) counts by ‖F_f‖
    bin; kept_fraction_by_bin (B, K) = kept_by_bin / pixels_by_bin (NaN for an empty bin).
    rejected (B, 4): pixels failing each reason, columns in ``REASONS`` order.
    """
    keep = result.keep
    b = keep.shape[0]
    n_bins = len(check_speed_edges(speed_edges)) - 1
    bins = speed_bin_index(result.speed, speed_edges).reshape(b, -1)
    pixels_by_bin = torch.zeros(b, n_bins, dtype=torch.int64, device=keep.device)
    kept_by_bin = torch.zeros_like(pixels_by_bin)
    valid = bins >= 0
    idx = bins.clamp(min=0)
    pixels_by_bin.scatter_add_(1, idx, valid.long())
    kept_by_bin.scatter_add_(1, idx, (valid & keep.reshape(b, -1)).long())
    frac = kept_by_bin.double() / pixels_by_bin.double()  # 0/0 → NaN marks an empty bin
    return {
        "kept_fraction": keep.reshape(b, -1).double().mean(1),
        "kept_count": keep.reshape(b, -1).sum(1),
        "pixels_by_bin": pixels_by_bin,
        "kept_by_bin": kept_by_bin,
        "kept_fraction_by_bin": frac,
        "rejected": torch.stack([result.rejected[r].reshape(b, -1).sum(1) for r in REASONS], dim=1),
    }

