"""Self-check: how well a scene's ground truth explains its own frames."""

from __future__ import annotations

import numpy as np
import torch

from motionrefine.bench.synth.config import has_photometric
from motionrefine.bench.synth.render import SynthSequence
from motionrefine.core.geometry import backward_warp


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
    clean = frames is seq.frames_clean or seq.frames_clean is None and not has_photometric(seq.config)
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
