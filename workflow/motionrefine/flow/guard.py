"""A guard against harm: keep the refined weights only if label-free signals say they are better.

Fine-tuning never sees ground truth, and neither does the guard. A fixed pattern of pixel
blocks (``holdout_mask``) is held back from every training label; after fine-tuning,
pretrained and refined students are compared on the training pairs by

- agreement with the teacher on the held-back verified pixels (EPE to the label): the
  decision signal, since it asks whether what was learnt carries over to unseen pixels;
- the forward-backward consistency rate and the photometric error of the warp over all
  pixels, reported beside it (they reward smooth or self-consistent flow, not correct flow).

The refined weights are kept iff their held-back agreement EPE is lower than the
pretrained model's by more than ``margin`` (relative).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from motionrefine import __version__
from motionrefine.core.device import pick_device
from motionrefine.core.geometry import flow_magnitude
from motionrefine.core.store import open_group, sha256_file, write_atomic, write_text_atomic
from motionrefine.flow.cycle import colour_error, fb_consistency
from motionrefine.flow.inference import FlowEstimator
from motionrefine.flow.labels import load_training_pairs
from motionrefine.models.checkpoint import load_raft

# Loose forward-backward test for the consistency *rate* (UnFlow's constants, non-squared
# norms): the label thresholds are strict on purpose and would leave a near-empty signal.
RATE_ALPHA, RATE_BETA = 0.01, 0.5


@dataclass(frozen=True)
class HoldOut:
    block: int = 16  # px side of a held-back block
    every: int = 5   # one block in `every` is held back

    def mask(self, height: int, width: int) -> np.ndarray:
        """(H, W) bool, True where a pixel is held back from training.

        Blocks on a diagonal lattice, so every image region and both axes are sampled and a
        crop of any position keeps about 1/every of them."""
        by = np.arange(height)[:, None] // self.block
        bx = np.arange(width)[None, :] // self.block
        return (by + 2 * bx) % self.every == 0


@dataclass
class PairSignals:
    agree_sum: float = 0.0   # sum of EPE to the label over held-back verified pixels
    agree_count: int = 0
    consistent: int = 0      # pixels passing the loose forward-backward test
    photometric_sum: float = 0.0
    pixels: int = 0

    def add(self, other: "PairSignals") -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def summary(self) -> dict:
        return {
            "agreement_epe": self.agree_sum / self.agree_count if self.agree_count else float("nan"),
            "agreement_pixels": int(self.agree_count),
            "fb_consistent_rate": self.consistent / self.pixels if self.pixels else float("nan"),
            "photometric_error": self.photometric_sum / self.pixels if self.pixels else float("nan"),
        }


def pair_signals(frames: np.ndarray, fw: np.ndarray, bw: np.ndarray, label_fw: np.ndarray, keep_fw: np.ndarray,
                 label_bw: np.ndarray, keep_bw: np.ndarray, held: np.ndarray) -> PairSignals:
    """Signals of one model's flow on consecutive pairs.

    frames (N+1, H, W, 3) uint8; fw, bw, label_* (N, H, W, 2); keep_* (N, H, W) bool; held (H, W)."""
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    f, b = t(fw).permute(0, 3, 1, 2).float(), t(bw).permute(0, 3, 1, 2).float()
    out = PairSignals()
    for pred, lab, keep in ((f, label_fw, keep_fw), (b, label_bw, keep_bw)):
        sel = t(keep & held[None])
        err = flow_magnitude(pred - t(lab).permute(0, 3, 1, 2).float())
        out.agree_sum += float(err[sel].sum())
        out.agree_count += int(sel.sum())
    ok, _, _ = fb_consistency(f, b, RATE_ALPHA, RATE_BETA)
    imgs = t(frames).permute(0, 3, 1, 2)
    photo = colour_error(imgs[:-1], imgs[1:], f)
    out.consistent += int(ok.sum())
    out.photometric_sum += float(photo.sum())
    out.pixels += ok.numel()
    return out


def decide(pretrained: dict, refined: dict, margin: float = 0.0) -> dict:
    """Keep the refined weights iff their held-back agreement EPE beats the pretrained one's."""
    before, after = pretrained["agreement_epe"], refined["agreement_epe"]
    if not (np.isfinite(before) and np.isfinite(after)):
        keep, why = False, "no held-back verified pixels: nothing to judge the refinement by"
    else:
        keep = after < before * (1.0 - margin)
        change = (after - before) / before * 100 if before else 0.0
        why = (f"held-back agreement with the teacher {before:.3f} -> {after:.3f} px ({change:+.1f} %): "
               + ("refined weights kept" if keep else "not better, pretrained weights kept"))
    return {"keep_refined": bool(keep), "reason": why, "margin": margin}


def model_signals(estimator, groups: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                  holdout: HoldOut) -> dict:
    """Summed signals of ``estimator`` over (frames, label_fw, keep_fw, label_bw, keep_bw) groups."""
    return _signals(estimator, groups, holdout).summary()


def _signals(estimator, groups, holdout: HoldOut) -> PairSignals:
    total = PairSignals()
    for frames, lab_fw, keep_fw, lab_bw, keep_bw in groups:
        fw, bw = estimator.pairs(frames)
        held = holdout.mask(*frames.shape[1:3])
        total.add(pair_signals(frames, fw, bw, lab_fw, keep_fw, lab_bw, keep_bw, held))
    return total


def video_signals(estimator, groups: dict[str, list], holdout: HoldOut) -> tuple[dict, dict[str, dict]]:
    """Signals over all videos (pixel-weighted) and per video: the user's view of their footage."""
    total, per_video = PairSignals(), {}
    for video, g in groups.items():
        sig = _signals(estimator, g, holdout)
        per_video[video] = sig.summary()
        total.add(sig)
    return total.summary(), per_video


def training_groups(pairs) -> dict[str, list[tuple[np.ndarray, ...]]]:
    """Per video, (frames, label_fw, keep_fw, label_bw, keep_bw) of every labelled pair of a training set."""
    groups, seen, stores = {}, set(), {}
    for p in pairs:
        if (p.labels, p.pair) in seen:  # both directions of a pair are one group
            continue
        seen.add((p.labels, p.pair))
        for path in (p.frames, p.labels):  # each store opened once, not once per pair
            if path not in stores:
                stores[path] = open_group(path)
        frames, lab = stores[p.frames]["frames"], stores[p.labels]
        i = p.pair
        groups.setdefault(p.video, []).append((
            np.asarray(frames[i:i + 2]), np.asarray(lab["flow"][i:i + 1]), np.asarray(lab["keep"][i:i + 1]),
            np.asarray(lab["flow_bw"][i:i + 1]), np.asarray(lab["keep_bw"][i:i + 1])))
    return groups


def guard_weights(pretrained: str, trained: str, training_set, out_weights: str, out_json: str,
                  variant: str = "small", iters: int = 12, holdout: HoldOut = HoldOut(), margin: float = 0.0,
                  enabled: bool = True, expected_sha256: str | None = None, device: str = "auto",
                  threads: int | None = None) -> dict:
    """Judge ``trained`` against ``pretrained`` on the training set's held-back pixels and
    write the weights to keep to ``out_weights``, the verdict and signals to ``out_json``.
    ``enabled`` False: keep ``trained`` unjudged (nothing was held back from its training)."""
    dev = pick_device(device, threads)
    groups = training_groups(load_training_pairs(training_set))
    signals, videos = {}, {}
    if enabled:
        for name, path, sha in (("pretrained", pretrained, expected_sha256), ("refined", trained, None)):
            model, _ = load_raft(path, variant, sha)
            signals[name], videos[name] = video_signals(FlowEstimator(model.to(dev), iters, device=dev), groups,
                                                        holdout)
        verdict = decide(signals["pretrained"], signals["refined"], margin)
    else:
        verdict = {"keep_refined": True, "reason": "guard disabled: fine-tuned weights kept unjudged", "margin": margin}
    chosen = trained if verdict["keep_refined"] else pretrained
    write_atomic(out_weights, lambda tmp: shutil.copyfile(chosen, tmp))
    result = {**verdict, "signals": signals, "videos": videos, "pairs": sum(map(len, groups.values())),
              "holdout": vars(holdout),
              "kept_weights": "refined" if verdict["keep_refined"] else "pretrained",
              "weights_sha256": sha256_file(out_weights), "code_version": __version__}
    write_text_atomic(out_json, json.dumps(result, indent=2))
    return result
