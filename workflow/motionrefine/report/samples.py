"""The sample flows of the report: the middle pair of a few videos re-run through the
pretrained and the refined checkpoints, so the pictures match the weights that were evaluated."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from motionrefine.config.plan import HELDOUT, SCENE_SEP
from motionrefine.core.store import open_group

log = logging.getLogger("motionrefine")


def training_run(video: str, runs: Sequence[str]) -> str | None:
    """The run whose fine-tuning saw ``video``: its own transductive run for a benchmark
    scene, the heldout run for a sample video."""
    if video in runs:
        return video
    if SCENE_SEP not in video and HELDOUT in runs:
        return HELDOUT
    return None


def pick_videos(videos: Sequence[str], cap: int) -> list[str]:
    """Up to ``cap`` videos, alternating sample videos and benchmark scenes so both show."""
    samples = [v for v in videos if SCENE_SEP not in v]
    scenes = [v for v in videos if SCENE_SEP in v]
    picked: list[str] = []
    while len(picked) < cap and (samples or scenes):
        for pool in (samples, scenes):
            if pool and len(picked) < cap:
                picked.append(pool.pop(0))
    return [v for v in videos if v in picked]


def sample_flows(videos: Sequence[str], frame_stores: Sequence[str], label_stores: Sequence[str],
                 runs: Sequence[str], refined: Sequence[str], pretrained: str, variant: str, iters: int,
                 max_videos: int = 6, device: str = "auto", threads: int = 1) -> list[dict]:
    """The middle pair of each chosen video through both models, plus its keep mask."""
    from motionrefine.core.device import pick_device
    from motionrefine.flow.inference import FlowEstimator
    from motionrefine.models.checkpoint import load_raft

    chosen = pick_videos(videos, max_videos)
    if not chosen:
        return []
    dev = pick_device(device, threads)
    weights = dict(zip(runs, refined))
    cache: dict[str, FlowEstimator] = {}

    def estimator(path: str) -> FlowEstimator:
        if path not in cache:
            model, _ = load_raft(path, variant)
            cache[path] = FlowEstimator(model.to(dev), iters=iters, device=dev)
        return cache[path]

    by_video = {v: (f, lab) for v, f, lab in zip(videos, frame_stores, label_stores)}
    out = []
    for v in chosen:
        fpath, lpath = by_video[v]
        frames = open_group(fpath)["frames"]
        if frames.shape[0] < 2:
            log.warning("%s: fewer than 2 frames, no sample flow", v)
            continue
        p = (frames.shape[0] - 1) // 2
        img1, img2 = np.asarray(frames[p]), np.asarray(frames[p + 1])
        lg = open_group(lpath)
        keep = np.asarray(lg["keep"][p], bool) if "keep" in lg and p < lg["keep"].shape[0] else None
        before = estimator(pretrained).flow(img1, img2)
        run = training_run(v, runs)
        after = estimator(weights[run]).flow(img1, img2) if run is not None else None
        out.append({"video": v, "pair": p, "frame": img1, "before": before, "after": after, "run": run,
                    "keep": keep})
        log.info("sample flow: %s pair %d (refined by %s)", v, p, run)
    return out
