"""The guard's decision with its own error bar: a paired bootstrap over held-back blocks.

The statistic is the relative change of the agreement EPE with the teacher, refined against
pretrained, over the scored pixels: 100 · (Σ EPE_refined / Σ EPE_pretrained − 1) %, both
models scored on the same pixels. The units resampled are blocks (``flow.holdout``): a block's
pixels, all pairs of its video together, since neighbouring pixels and the same block in
consecutive pairs see the same content and err together. Resampling is paired (a drawn block
brings both models' errors), stratified by video for the pooled verdict (the videos are
given, the blocks within them are the sample), seeded and so deterministic.

Flags, the same rule for the pooled verdict, each video and a new clip:

- ``helped``: the whole interval below −100·margin %: the refined weights;
- ``reverted``: the whole interval above 0: worse, the pretrained weights;
- ``not shown``: the interval holds both (or fewer than ``min_blocks`` blocks, too few for a
  percentile interval to mean anything): the pretrained weights.

A video uses the refined weights only when it was helped and the pooled verdict kept them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from motionrefine.core.errors import MotionRefineError

HELPED, NOT_SHOWN, REVERTED, NOT_JUDGED = "helped", "not shown", "reverted", "not judged"
NAN = float("nan")


@dataclass(frozen=True)
class Rule:
    margin: float = 0.0       # relative improvement the interval must clear
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    min_blocks: int = 5

    def __post_init__(self):
        if not 0 <= self.margin < 1:
            raise MotionRefineError(f"guard margin must be in [0, 1), got {self.margin}")
        if self.resamples < 1:
            raise MotionRefineError(f"guard bootstrap resamples must be >= 1, got {self.resamples}")
        if not 0 < self.confidence < 1:
            raise MotionRefineError(f"guard confidence must be in (0, 1), got {self.confidence}")
        if self.min_blocks < 1:
            raise MotionRefineError(f"guard min_blocks must be >= 1, got {self.min_blocks}")

    def as_dict(self) -> dict:
        return asdict(self)


def change_interval(parts: Sequence[tuple[np.ndarray, np.ndarray]], rule: Rule) -> dict:
    """Change % and its interval from ``parts``: per video, per block the summed EPE of the
    pretrained and the refined model over the block's scored pixels (two equal-length arrays)."""
    parts = [(np.asarray(p, np.float64), np.asarray(r, np.float64)) for p, r in parts]
    parts = [(p, r) for p, r in parts if len(p)]
    if any(p.shape != r.shape for p, r in parts):
        raise MotionRefineError("guard bootstrap: the two models were scored on different blocks")
    blocks = sum(len(p) for p, _ in parts)
    pre = sum(float(p.sum()) for p, _ in parts)
    ref = sum(float(r.sum()) for _, r in parts)
    change = 100.0 * (ref / pre - 1.0) if pre > 0 else NAN
    out = {"change_pct": change, "interval_pct": [NAN, NAN], "blocks": int(blocks)}
    if blocks < rule.min_blocks or not math.isfinite(change):
        return out
    rng = np.random.default_rng(rule.seed)
    s_pre, s_ref = np.zeros(rule.resamples), np.zeros(rule.resamples)
    for p, r in parts:
        idx = rng.integers(0, len(p), (rule.resamples, len(p)))
        s_pre += p[idx].sum(1)
        s_ref += r[idx].sum(1)
    # A resample of only error-free pretrained blocks has no ratio: counted as no change.
    ratio = np.where(s_pre > 0, 100.0 * (s_ref / np.where(s_pre > 0, s_pre, 1.0) - 1.0), 0.0)
    tail = (1.0 - rule.confidence) / 2
    lo, hi = np.quantile(ratio, [tail, 1.0 - tail])
    out["interval_pct"] = [float(lo), float(hi)]
    return out


def flag(interval_pct: Sequence[float], rule: Rule) -> str:
    lo, hi = interval_pct
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return NOT_SHOWN
    if hi < -100.0 * rule.margin:
        return HELPED
    return REVERTED if lo > 0 else NOT_SHOWN


def describe(pre: dict, ref: dict, change: dict, rule: Rule) -> str:
    """'held-back agreement 0.520 -> 0.410 px (-21.1 %, 95 % interval [-28.0, -14.1] % over 12 blocks)'."""
    what = f"agreement with the teacher {pre.get('agreement_epe', NAN):.3f} -> {ref.get('agreement_epe', NAN):.3f} px"
    lo, hi = change["interval_pct"]
    if math.isfinite(lo):
        return (f"{what} ({change['change_pct']:+.1f} %, {100 * rule.confidence:g} % interval "
                f"[{lo:+.1f}, {hi:+.1f}] % over {change['blocks']} blocks)")
    if not change["blocks"]:
        return f"{what}: no verified label pixels scored"
    return (f"{what} ({change['change_pct']:+.1f} %) over only {change['blocks']} blocks, fewer than the "
            f"{rule.min_blocks} an interval needs")


_OUTCOME = {HELPED: "refined weights", NOT_SHOWN: "no improvement shown, pretrained weights",
            REVERTED: "worse, pretrained weights"}


def pooled_verdict(pre: dict, ref: dict, parts, rule: Rule) -> dict:
    """The run's decision: keep the refined weights iff the pooled interval is wholly below −margin."""
    change = change_interval(parts, rule)
    f = flag(change["interval_pct"], rule)
    keep = f == HELPED
    reason = f"held-back {describe(pre, ref, change, rule)}: {_OUTCOME[f]} kept"
    return {"keep_refined": keep, "reason": reason, "flag": f, **change}


def video_entry(pre: dict, ref: dict, parts, rule: Rule, run_keeps: bool | None = True) -> dict:
    """One video's entry of guard.json (``run_keeps``: the pooled verdict kept the refined
    weights; None for a clip judged on its own)."""
    change = change_interval(parts, rule)
    f = flag(change["interval_pct"], rule)
    use = "refined" if f == HELPED and run_keeps is not False else "pretrained"
    outcome = _OUTCOME[f]
    if f == HELPED and run_keeps is False:
        outcome = "helped here, but the run's pooled verdict reverted it: pretrained weights"
    return {"pretrained": pre, "refined": ref, **change, "flag": f, "use": use,
            "reason": f"{describe(pre, ref, change, rule)}: {outcome}"}


def not_judged(reason: str = "guard disabled: fine-tuned weights used unjudged") -> dict:
    return {"pretrained": {}, "refined": {}, "change_pct": NAN, "interval_pct": [NAN, NAN], "blocks": 0,
            "flag": NOT_JUDGED, "use": "refined", "reason": reason}


def video_choice(verdict: dict, video: str) -> dict:
    """Which weights ``video``'s deliverable uses, from a guard.json: its entry (a copy). A
    disabled guard judged nothing: refined, "not judged". A pooled verdict that reverted
    leaves every video on the pretrained weights."""
    if not verdict.get("enabled", True):
        return not_judged()
    videos = verdict.get("videos") or {}
    if video not in videos:
        raise MotionRefineError(f"the guard judged no video {video!r} (it judged: {sorted(videos) or 'none'})")
    entry = copy.deepcopy(videos[video])
    if "flag" not in entry:
        raise MotionRefineError(f"guard verdict for {video!r} has no flag: written by an older version; "
                                "rerun rule guard")
    if not verdict.get("keep_refined"):
        entry["use"] = "pretrained"
    return entry
