"""Point trackers as the evaluation calls them: any callable ``(frames (T, H, W, 3) uint8,
queries (N, 3) [t, x, y]) -> (tracks (N, T, 2) float pixels, occluded (N, T) bool)``. Factories
here wrap PIPs (chained windows, ``track_long``), FlowPips (``FlowPips.track``), chained RAFT
flow (``chain_flow_tracks``) and the zero-motion baseline."""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

Tracker = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def zero_motion_tracker() -> Tracker:
    """Every point stays where it was queried, always visible."""

    def track(frames: np.ndarray, queries: np.ndarray):
        q = np.asarray(queries, np.float32)
        tracks = np.repeat(q[:, None, 1:], len(frames), axis=1)
        return tracks, np.zeros(tracks.shape[:2], bool)

    return track


def pips_tracker(model, iters: int = 6, vis_threshold: float = 0.5, device=None) -> Tracker:
    """PIPs chained over S-frame windows (``track_long``); occluded = visibility < threshold."""
    from motionrefine.models.pips import track_long

    def track(frames: np.ndarray, queries: np.ndarray):
        tracks, vis = track_long(model, frames, queries, S=model.cfg.S, iters=iters, device=device)
        occ = vis < vis_threshold
        q = np.asarray(queries)[:, 0].round().astype(np.int64)
        occ[np.arange(len(q)), q] = False  # the query frame is visible by definition
        return tracks, occ

    return track


def flowpips_tracker(model, iters: int | None = None) -> Tracker:
    """FlowPips (chained flow + window update, ``FlowPips.track``); occluded = visibility logit < 0."""

    def track(frames: np.ndarray, queries: np.ndarray):
        tracks, logits = model.track(frames, queries, iters=iters)
        return tracks, logits < 0

    return track


def pips_tracker_from_checkpoint(path: str | os.PathLike, size: str = "small", iters: int = 6,
                                 stride: int | None = None, device=None,
                                 raft_checkpoint: str | os.PathLike | None = None,
                                 backbone: str | os.PathLike | None = None) -> Tracker:
    """``raft_checkpoint``: the RAFT-small weights a FlowPips tracker (size flow-small) was
    trained on; ``backbone``: other RAFT-small weights to run it on instead (a refined RAFT)."""
    from motionrefine.models.pips import load_pips
    from motionrefine.models.pips.flowpips import FLOWPIPS_SIZE, load_flowpips

    if size == FLOWPIPS_SIZE:  # ``iters``: its update iterations (None: the checkpoint's own)
        model, _ = load_flowpips(path, raft_checkpoint)
        if backbone is not None:
            model.load_raft(backbone)
        if device is not None:
            model.to(device)
        return flowpips_tracker(model, iters)

    model, _ = load_pips(path, size, stride=stride)
    if device is not None:
        model.to(device)
    return pips_tracker(model, iters, device=device)


def raft_chain_tracker(estimator, iters: int = 12, window: int = 8, alpha: float = 0.002,
                       beta: float = 0.1, variant: str = "small") -> Tracker:
    """Chained optical flow: ``estimator`` is an ``inference.FlowEstimator`` or the path of a
    RAFT checkpoint of architecture ``variant``. Flow is computed in windows of ``window``
    pairs (both directions)."""
    from motionrefine.flow.inference import FlowEstimator
    from motionrefine.track.chain import chain_flow_tracks

    if not isinstance(estimator, FlowEstimator):
        from motionrefine.models.checkpoint import load_raft

        model, _ = load_raft(estimator, variant)
        estimator = FlowEstimator(model, iters=iters)

    def track(frames: np.ndarray, queries: np.ndarray):
        fws, bws = [], []
        t = len(frames)
        for s in range(0, t - 1, window):
            fw, bw = estimator.pairs(frames[s:min(s + window, t - 1) + 1])
            fws.append(fw)
            bws.append(bw)
        return chain_flow_tracks(np.concatenate(fws), np.concatenate(bws), queries, alpha=alpha, beta=beta)

    return track
