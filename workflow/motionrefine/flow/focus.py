"""Spend the fine-tuning where the labels know more than the student.

A verified label teaches only where the student is wrong: where the pretrained student already
agrees with the teacher to a tenth of a pixel, its L1 gradient is as large as where they differ by
three pixels, and it pulls the student towards what it already does. Before training, the
pretrained student runs once on every training pair (at its own scale and iterations); each
verified pixel's disagreement d = ‖F_teacher − F_student‖ then sets its loss weight

    w = (1 − λ) + λ · min(d / d̄, CAP),

d̄ the pair's mean disagreement over its training pixels, λ = ``finetune.focus`` (0: every verified
pixel alike, the paper's; 1: weight proportional to the disagreement). The cap keeps a few labels
the verification let through wrongly from owning a crop. With ``finetune.focus_crops`` the crop's
origin is drawn in proportion to the weight it holds (``flow.augment.origin_weights``), so on a
frame larger than the crop the steps go where the disagreement is. No ground truth is read: the
weights come from the labels and the pretrained model only, on the pixels fine-tuning trains on
(held-back regions weigh 0, so the guard's blocks stay unseen). Both are off by default; the
dev-scene measurements are in docs/budget.md.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from motionrefine.bench.metrics import epe_map
from motionrefine.flow.inference import FlowEstimator

log = logging.getLogger("motionrefine")

# A pixel weighs at most this many times the pair's mean disagreement.
CAP = 10.0


def focus_weights(label: np.ndarray, student: np.ndarray, valid: np.ndarray, strength: float) -> np.ndarray:
    """(H, W) float32 loss weights of one direction: 0 off ``valid``, on it (1 − λ) + λ · min(d/d̄, CAP)
    with d the end-point distance between ``label`` and ``student`` flow (H, W, 2), d̄ its mean on
    ``valid``. Where the student already matches every label (d̄ = 0) the weights are uniform."""
    valid = np.asarray(valid, bool)
    d = epe_map(student, np.nan_to_num(np.asarray(label, np.float32)))
    w = np.zeros(valid.shape, np.float32)
    if not valid.any():
        return w
    mean = float(d[valid].mean())
    rel = np.minimum(d / mean, CAP) if mean > 0 else np.ones_like(d)
    w[valid] = (1.0 - strength) + strength * rel[valid]
    return w


def disagreement_weights(model, iters: int, dataset, strength: float) -> list[np.ndarray]:
    """Loss weights of every pair of ``dataset`` (a ``flow.pairs.PairDataset``: its ``read``), from
    the pretrained ``model`` at ``iters`` iterations (left in eval mode; the caller restores
    training mode). A frame pair's two directions share one student pass."""
    est = FlowEstimator(model, iters)
    started = time.perf_counter()
    flows: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    out = []
    for i, p in enumerate(dataset.pairs):
        img, label, valid = dataset.read(i)
        key = (p.frames, p.pair)
        if key not in flows:
            # A backward pair's frames come reversed: its own flow is the first of the two.
            first, second = est.pairs(np.ascontiguousarray(img), backward=True)
            flows[key] = (second[0], first[0]) if p.direction == "bw" else (first[0], second[0])
        fw, bw = flows[key]
        out.append(focus_weights(label, bw if p.direction == "bw" else fw, valid, strength))
    log.info("focus: the pretrained student on %d frame pairs in %.1f s", len(flows), time.perf_counter() - started)
    return out
