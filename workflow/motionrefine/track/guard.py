"""The tracker's guard (FlowPips fine-tuning): the label tracks that start in a lattice of
blocks (``flow.guard.HoldOut``) are held back from training, with no training track within a
band of them at any frame (``track.holdout``), and the fine-tuned update is kept only if it
agrees better with them than the initial update did."""

from __future__ import annotations

import logging
from typing import Sequence

import torch

from motionrefine.track.samples import TrackSample, load_sample
from motionrefine.track.window_loss import WindowInputs, flowpips_track_loss

log = logging.getLogger("motionrefine")


@torch.no_grad()
def held_back_epe(model, inputs: WindowInputs, samples: Sequence[TrackSample], cache: dict,
                  iters: int | None) -> float:
    """Mean distance (px, frames 1..S−1, over tracks) of the tracker to held-back label tracks."""
    total, count = 0.0, 0
    for smp in samples:
        _, tracks = load_sample(smp, cache)
        _, m = flowpips_track_loss(model, inputs, smp, tracks, 0.8, iters)
        total += m["epe"] * len(smp.rows)
        count += len(smp.rows)
    return total / count if count else float("nan")


def guard_update(c, model, initial: dict, inputs, held, cache) -> dict:
    """Keep the fine-tuned update iff it is closer to the held-back tracks than ``initial`` (the
    update it started from) by more than ``c.guard_margin`` (``c``: the fine-tuning config);
    otherwise put ``initial`` back. With no held-back tracks nothing shows a gain, so
    ``initial`` is put back too (as the flow guard keeps the pretrained weights when it cannot tell)."""
    if not held:
        model.mixer.load_state_dict(initial)
        log.info("tracker guard: no held-back tracks, nothing shows a gain: keep the initial update")
        return {"keep_refined": False, "held_tracks": 0,
                "reason": "no held-back tracks: no gain shown, initial update kept"}
    trained = {k: v.detach().clone() for k, v in model.mixer.state_dict().items()}
    refined = held_back_epe(model, inputs, held, cache, c.iters)
    model.mixer.load_state_dict(initial)
    before = held_back_epe(model, inputs, held, cache, c.iters)
    keep = bool(refined < before * (1.0 - c.guard_margin))
    if keep:
        model.mixer.load_state_dict(trained)
    log.info("tracker guard: held-back EPE %.4f (initial update) -> %.4f (fine-tuned) on %d tracks: %s",
             before, refined, sum(len(s.rows) for s in held), "keep the fine-tuned update" if keep else
             "keep the initial update")
    return {"keep_refined": keep, "held_tracks": int(sum(len(s.rows) for s in held)),
            "held_epe_initial": before, "held_epe_refined": refined, "margin": c.guard_margin}
