"""Pseudo-label quality per teacher on a generated scene: the FlowPips teachers' verified
tracks (``track.teachers``) against the scene's exact tracks (ground truth for reporting only)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

log = logging.getLogger("motionrefine")


def gt_window_tracks(flow_fw: np.ndarray, start: int, points: np.ndarray, S: int) -> np.ndarray:
    """Ground-truth tracks (N, S, 2) of points (N, 2) at frame ``start`` of a synthetic scene,
    by chaining its exact forward flow (bilinear between pixel centres)."""
    from motionrefine.models.pips.flowpips import flow_at

    p = torch.from_numpy(np.asarray(points, np.float64))
    out = [p]
    for t in range(start, start + S - 1):
        p = p + flow_at(torch.from_numpy(np.asarray(flow_fw[t])), p)
        out.append(p)
    return torch.stack(out, dim=1).numpy()


def label_quality(scene_path: str, teacher_flow: str | None, checkpoint: str, raft_checkpoint: str,
                  label_settings: Mapping, scene_name: str | None = None) -> list[dict]:
    """Pseudo-labels on a generated scene from the FlowPips ``checkpoint`` (on ``raft_checkpoint``),
    per teacher (``teachers.flowpips_window_trackers``):
    tracks kept and their error against the ground truth (mean over frames 1..S−1 of the
    distance to the exact-flow track; ground truth used here for reporting only). ``scene_name``: the
    scene's name in the rows (default: the store's stem)."""
    from motionrefine.bench.synth import read_sequence
    from motionrefine.models.pips.flowpips import load_flowpips
    from motionrefine.track.labels import TrackLabelConfig, label_video
    from motionrefine.track.teachers import TEACHERS, flowpips_window_trackers, read_teacher_flow

    seq = read_sequence(scene_path)
    model, _ = load_flowpips(checkpoint, raft_checkpoint)
    cfg = TrackLabelConfig.from_dict({k: v for k, v in label_settings.items() if k not in ("size", "teachers")})
    flow = None
    teachers = [t for t in label_settings.get("teachers", TEACHERS)]
    if teacher_flow is not None:
        flow = read_teacher_flow(teacher_flow, *seq.frames.shape[:3])
    elif "flow" in teachers:
        teachers.remove("flow")
    rows = []
    scene_name = scene_name or Path(scene_path).stem
    S = model.cfg.S
    for name, fn in flowpips_window_trackers(model, seq.frames, flow, teachers).items():
        lab = label_video(seq.frames, None, cfg, S=S, window_tracker=fn)
        if name == "flow":
            fn.log_skipped(scene_name, len(lab["windows"]))
        err = np.zeros(0)
        if len(lab["tracks"]):
            gt = np.concatenate([gt_window_tracks(seq.flow_fw, int(s), lab["tracks"][lab["window_start"] == s][:, 0], S)
                                 for s in np.unique(lab["window_start"])])
            order = np.concatenate([np.flatnonzero(lab["window_start"] == s) for s in np.unique(lab["window_start"])])
            err = np.linalg.norm(lab["tracks"][order] - gt, axis=-1)[:, 1:].mean(axis=1)
        seeds = sum(w["seeds"] for w in lab["windows"])
        rows.append({"scene": scene_name, "teacher": name, "seeds": int(seeds),
                     "seeds_kept": int(sum(w["seeds_kept"] for w in lab["windows"])), "tracks": int(len(err)),
                     "err_mean_px": float(err.mean()) if len(err) else float("nan"),
                     "err_median_px": float(np.median(err)) if len(err) else float("nan"),
                     "within_1px": float((err < 1).mean()) if len(err) else float("nan"),
                     "theta_px": float(lab["resolved"]["theta"])})
        log.info("labels on %s, teacher %s: %d tracks kept, error mean %.2f px", rows[-1]["scene"], name,
                 rows[-1]["tracks"], rows[-1]["err_mean_px"])
    return rows
