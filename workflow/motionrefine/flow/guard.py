"""A guard against harm: keep the refined weights only if label-free signals say they are better.

Fine-tuning never sees ground truth, and neither does the guard. A region of every training
pair is held back from training in both directions, with a band around it that is neither
trained on nor scored (``flow.holdout``: one split, made for fine-tuning and for the guard by
the same function). After fine-tuning, pretrained and refined students are compared on the
training pairs by

- agreement with the teacher on the held-back verified pixels (EPE to the label): the
  decision signal, since it asks whether what was learnt carries over to unseen pixels;
- the forward-backward consistency rate and the photometric error of the warp over all
  pixels, reported beside it (they reward smooth or self-consistent flow, not correct flow).

The decision has its own error bar (``flow.verdict``): a seeded bootstrap over the held-back
blocks gives the relative change of the agreement EPE, refined against pretrained, with its
interval; the refined weights are kept only when the whole interval lies below −margin. Each
video gets the same interval and a flag (helped, not shown, reverted); a video's deliverable
uses the refined weights only when it was helped and the run kept them (:func:`video_choice`).

:func:`check_clip` judges a refined model on a clip it never trained on by the same rule,
on every verified label pixel of the clip's labelled pairs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from typing import Iterable, NamedTuple

import numpy as np
import torch

from motionrefine import __version__
from motionrefine.core.device import pick_device
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import open_group, sha256_file, write_atomic, write_text_atomic
from motionrefine.flow.cycle import colour_error, fb_consistency
from motionrefine.flow.holdout import HoldOut, all_units, read_split
from motionrefine.flow.inference import FlowEstimator
from motionrefine.flow.trainset import check_frames_store, labelled_pairs, load_training_pairs, video_name
# Rule and video_choice are part of this module's interface (the rule script, the workflow).
from motionrefine.flow.verdict import NAN, NOT_JUDGED, Rule, not_judged, pooled_verdict, video_choice, video_entry
from motionrefine.models.checkpoint import load_raft

# Loose forward-backward test for the consistency *rate* (UnFlow's constants, non-squared
# norms): the label thresholds are strict on purpose and would leave a near-empty signal.
RATE_ALPHA, RATE_BETA = 0.01, 0.5
MODELS = ("pretrained", "refined")


@dataclass
class PairSignals:
    agree_sum: float = 0.0   # sum of EPE to the label over scored verified pixels
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


class Group(NamedTuple):
    """One pair to score: frames (2, H, W, 3) uint8, its labels (H, W, 2) per direction, and
    per direction the scored pixels and their bootstrap units (``flow.holdout``)."""

    frames: np.ndarray
    flow_fw: np.ndarray
    flow_bw: np.ndarray
    score_fw: np.ndarray
    score_bw: np.ndarray
    unit_fw: np.ndarray
    unit_bw: np.ndarray


def pair_signals(group: Group, fw: np.ndarray, bw: np.ndarray, n_units: int) -> tuple[PairSignals, np.ndarray]:
    """Signals of one model's flow fw, bw (H, W, 2) on a pair, and its EPE summed per unit (n_units,)."""
    out, unit_err = PairSignals(), np.zeros(n_units)
    for pred, lab, score, unit in ((fw, group.flow_fw, group.score_fw, group.unit_fw),
                                   (bw, group.flow_bw, group.score_bw, group.unit_bw)):
        err = np.linalg.norm(pred[score].astype(np.float64) - lab[score], axis=-1)
        out.agree_sum += float(err.sum())
        out.agree_count += int(err.size)
        unit_err += np.bincount(unit[score], weights=err, minlength=n_units)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)  # noqa: E731
    f, b = t(fw[None]).float(), t(bw[None]).float()
    ok, _, _ = fb_consistency(f, b, RATE_ALPHA, RATE_BETA)
    imgs = t(group.frames)
    out.consistent += int(ok.sum())
    out.photometric_sum += float(colour_error(imgs[:1], imgs[1:], f).sum())
    out.pixels += ok.numel()
    return out, unit_err


class Scores(NamedTuple):
    signals: dict[str, PairSignals]   # per model
    unit_err: dict[str, np.ndarray]   # per model, EPE summed per unit
    unit_count: np.ndarray            # scored pixels per unit

    def parts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per unit with scored pixels, the pretrained and the refined model's summed EPE."""
        used = self.unit_count > 0
        return self.unit_err["pretrained"][used], self.unit_err["refined"][used]

    def summary(self, model: str) -> dict:
        return self.signals[model].summary()


def score_models(estimators: dict[str, FlowEstimator], groups: Iterable[Group], n_units: int) -> Scores:
    """Every model's signals over ``groups`` (one video's pairs), each pair read once."""
    scores = Scores({m: PairSignals() for m in estimators}, {m: np.zeros(n_units) for m in estimators},
                    np.zeros(n_units, np.int64))
    for g in groups:
        scores.unit_count[:] += np.bincount(g.unit_fw[g.score_fw], minlength=n_units)
        scores.unit_count[:] += np.bincount(g.unit_bw[g.score_bw], minlength=n_units)
        for m, est in estimators.items():
            fw, bw = est.pairs(g.frames)
            sig, err = pair_signals(g, fw[0], bw[0], n_units)
            scores.signals[m].add(sig)
            scores.unit_err[m] += err
    return scores


class PairGroups:
    """One video's labelled pairs of a training set, read as :class:`Group` one at a time (each
    time it is iterated), split by ``holdout`` exactly as fine-tuning split them
    (``flow.holdout.read_split``)."""

    def __init__(self, items: list[tuple[str, str, int]], holdout: HoldOut, stores: dict):
        self.items, self.holdout, self._stores = items, holdout, stores

    def _open(self, path: str):
        if path not in self._stores:  # each store opened once, not once per pair
            self._stores[path] = open_group(path)
        return self._stores[path]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def n_units(self) -> int:
        return self.holdout.n_cells(*self._open(self.items[0][0])["frames"].shape[1:3])

    def __iter__(self):
        for frames_path, labels_path, i in self.items:
            fw, bw, split = read_split(self._open(labels_path), i, self.holdout, labels_path)
            frames = np.asarray(self._open(frames_path)["frames"][i:i + 2])
            yield Group(frames, fw, bw, split.score_fw, split.score_bw, split.unit_fw, split.unit_bw)


def training_groups(pairs, holdout: HoldOut) -> dict[str, PairGroups]:
    """Per video, every labelled pair of a training set (both directions of a pair are one group)."""
    items: dict[str, dict] = {}
    for p in pairs:
        items.setdefault(p.video, {})[(p.frames, p.labels, p.pair)] = None
    stores: dict = {}
    return {v: PairGroups(list(keys), holdout, stores) for v, keys in items.items()}


def _estimators(checkpoints: dict[str, tuple[str, str | None]], variant: str, iters: int, dev) -> tuple[dict, dict]:
    """model name -> FlowEstimator, and -> sha256 of its file (``checkpoints``: name -> (path, expected sha256))."""
    est, shas = {}, {}
    for name, (path, sha) in checkpoints.items():
        model, shas[name] = load_raft(path, variant, sha)
        est[name] = FlowEstimator(model.to(dev), iters, device=dev)
    return est, shas


def guard_weights(pretrained: str, trained: str, training_set, out_weights: str, out_json: str,
                  variant: str = "small", iters: int = 12, holdout: HoldOut = HoldOut(), rule: Rule = Rule(),
                  enabled: bool = True, expected_sha256: str | None = None, device: str = "auto",
                  threads: int | None = None) -> dict:
    """Judge ``trained`` against ``pretrained`` on the training set's held-back pixels and
    write the weights to keep to ``out_weights``, the verdict and signals to ``out_json``.
    ``enabled`` False: keep ``trained`` unjudged (nothing was held back from its training)."""
    pairs = load_training_pairs(training_set)
    n_pairs = len({(p.labels, p.pair) for p in pairs})
    if enabled:
        dev = pick_device(device, threads)
        est, _ = _estimators({"pretrained": (pretrained, expected_sha256), "refined": (trained, None)}, variant,
                             iters, dev)
        per_video = {v: score_models(est, g, g.n_units) for v, g in training_groups(pairs, holdout).items()}
        total = {m: PairSignals() for m in MODELS}
        for s in per_video.values():
            for m in MODELS:
                total[m].add(s.signals[m])
        signals = {m: total[m].summary() for m in MODELS}
        verdict = pooled_verdict(signals["pretrained"], signals["refined"], [s.parts() for s in per_video.values()],
                                 rule)
        videos = {v: video_entry(s.summary("pretrained"), s.summary("refined"), [s.parts()], rule,
                                 verdict["keep_refined"]) for v, s in per_video.items()}
    else:
        signals = {}
        verdict = {"keep_refined": True, "reason": "guard disabled: fine-tuned weights kept unjudged",
                   "flag": NOT_JUDGED, "change_pct": NAN, "interval_pct": [NAN, NAN], "blocks": 0}
        videos = {v: not_judged() for v in dict.fromkeys(p.video for p in pairs)}
    chosen = trained if verdict["keep_refined"] else pretrained
    write_atomic(out_weights, lambda tmp: shutil.copyfile(chosen, tmp))
    result = {**verdict, "enabled": bool(enabled), "margin": rule.margin, "signals": signals, "videos": videos,
              "pairs": n_pairs, "holdout": asdict(holdout), "bootstrap": rule.as_dict(),
              "kept_weights": "refined" if verdict["keep_refined"] else "pretrained",
              "weights_sha256": sha256_file(out_weights), "code_version": __version__}
    write_text_atomic(out_json, json.dumps(result, indent=2))
    return result


def check_clip(frames_path: str, labels_path: str, pretrained_ckpt: str, candidate_ckpt: str, variant: str = "small",
               iters: int = 12, expected_sha256: str | None = None, device: str = "auto", threads: int | None = None,
               rule: Rule = Rule(), block: int = HoldOut.block, candidate_sha256: str | None = None) -> dict:
    """Should a new clip's deliverable use ``candidate_ckpt`` (a refined model that never saw
    the clip) or ``pretrained_ckpt``? The entry of a video in guard.json, judged by the same
    rule on every verified label pixel of the clip's labelled pairs (its label store, from the
    pretrained checkpoint as teacher); ``block``-px blocks are the bootstrap units. Writes nothing."""
    lab = open_group(labels_path)
    attrs = dict(lab.attrs)
    frames = check_frames_store(attrs, open_group(frames_path), labels_path, frames_path)
    missing = [k for k in ("flow", "keep", "flow_bw", "keep_bw") if k not in lab]
    if missing:
        raise MotionRefineError(f"{labels_path}: not a flow label store (no array {', '.join(missing)})")
    n_pairs, h, w = lab["keep"].shape
    if frames.shape[:3] != (n_pairs + 1, h, w):
        raise MotionRefineError(f"{labels_path}: labels of {n_pairs} pairs at {h}x{w} do not fit frames "
                                f"{tuple(frames.shape)} of {frames_path}")
    checkpoints = {"pretrained": (pretrained_ckpt, expected_sha256), "refined": (candidate_ckpt, candidate_sha256)}
    est, shas = _estimators(checkpoints, variant, iters, pick_device(device, threads))
    teacher = attrs.get("checkpoint_sha256")
    if teacher and teacher != shas["pretrained"]:
        raise MotionRefineError(f"{labels_path} was labelled by checkpoint {teacher[:12]}…, not by the pretrained "
                                f"{pretrained_ckpt} ({shas['pretrained'][:12]}…): agreement with another teacher "
                                "says nothing about this refinement")
    used = []

    def groups():
        for i in np.flatnonzero(labelled_pairs(lab)):
            fw, bw, split = read_split(lab, int(i), None, labels_path)
            if not (split.train_fw.any() or split.train_bw.any()):
                continue  # nothing verified in this pair
            used.append(int(i))
            unit_fw, unit_bw = all_units(bw, split.train_fw, split.train_bw, block)
            yield Group(np.asarray(frames[i:i + 2]), fw, bw, split.train_fw, split.train_bw, unit_fw, unit_bw)

    scores = score_models(est, groups(), HoldOut(block=block).n_cells(h, w))
    entry = video_entry(scores.summary("pretrained"), scores.summary("refined"), [scores.parts()], rule, None)
    return {**entry, "video": attrs.get("video", video_name(labels_path)), "pairs": len(used),
            "block": block, "bootstrap": rule.as_dict(), "pretrained_sha256": shas["pretrained"],
            "candidate_sha256": shas["refined"]}
