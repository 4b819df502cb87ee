"""FlowPips pseudo-labels from two verified teachers: the tracker itself ("tracker", the paper's
self-labelling) and the label-maker's flow chained over each window ("flow", the teacher
store results/teacher/{video}.zarr). Both go through ``labels.label_video``; one labels store
with a ``teacher`` array.

The teacher store holds only the pairs of the video's label budget (``pair_computed``); the
others, and any pair with non-finite values (``pair_finite``), are stored as zeros. Zero flow
passes the forward-backward check, so a track that stands still on those pairs and moves on
the computed ones would pass as verified: a wrong label. The "flow" teacher therefore skips
every window that holds such a pair (and logs how many it skipped, and why), rather than
chaining through the gap or labelling a shorter span: a label is an S-frame track, and a gap
has no flow to chain. A budget keeps pairs spread evenly over the video
(``flow.teacher.TeacherSettings.select_pairs``), so computed pairs lie far apart (on an HD
video no 8-frame window holds more than one): on a budgeted video the flow teacher gives no
tracks, and the tracker teacher, which computes its own flow of every pair, still does.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from motionrefine import __version__
from motionrefine.core.device import pick_device
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import open_group
from motionrefine.io.flow_formats import rescale_flow
from motionrefine.track.chain import ChainedFlowClip, FlowPipsClip
from motionrefine.track.labels import (LABEL_FORMAT_VERSION, TrackLabelConfig, edges_json, label_video,
                                       write_track_labels)
from motionrefine.track.resolution import at_size, tracking_size

log = logging.getLogger("motionrefine")

TEACHERS = ("tracker", "flow")


def read_teacher_flow(path: str | os.PathLike, num_frames: int, height: int, width: int,
                      size: tuple[int, int] | None = None) -> dict:
    """The teacher flow store's ``flow_fw``/``flow_bw`` (T−1, H, W, 2) and its per-pair masks
    ``pair_computed`` and ``pair_finite`` (all True where the store has none: no budget, no
    bad values). ``size`` (height, width): the flow resampled to the tracker's size, vectors
    scaled with it (only the computed pairs; the rest stay zero and are skipped anyway)."""
    g = open_group(path)
    n = num_frames - 1
    if "flow_fw" not in g or "flow_bw" not in g:
        raise MotionRefineError(f"{path}: teacher 'flow' needs a flow store with flow_fw and flow_bw")
    for k in ("flow_fw", "flow_bw"):
        if g[k].shape != (n, height, width, 2):
            raise MotionRefineError(f"{path}: {k} is {g[k].shape}; teacher 'flow' needs {n} pairs at "
                                    f"{height}x{width}, i.e. {(n, height, width, 2)}")
    out = {}
    for k in ("pair_computed", "pair_finite"):
        out[k] = np.asarray(g[k][...], bool) if k in g else np.ones(n, bool)
        if out[k].shape != (n,):
            raise MotionRefineError(f"{path}: {k} is {out[k].shape}, expected ({n},)")
    for k in ("flow_fw", "flow_bw"):
        if size is None or tuple(size) == (height, width):
            out[k] = np.asarray(g[k][...])
            continue
        out[k] = np.zeros((n,) + tuple(size) + (2,), np.float32)
        for t in np.flatnonzero(out["pair_computed"]):  # pair by pair: one full-size pair in memory
            out[k][t] = rescale_flow(np.asarray(g[k][t]), (size[1], size[0]))
    return out


class FlowTeacherWindows:
    """``window_tracker(start, clip)`` of the "flow" teacher: the teacher flow chained over the
    clip's pairs, or None (skip) for a window holding a pair that is not computed or not finite
    (module doc). ``skipped`` counts the skipped windows per reason."""

    def __init__(self, flow: dict, size: tuple[int, int]):
        self.flow, self.size = flow, size
        self.computed = flow.get("pair_computed", np.ones(len(flow["flow_fw"]), bool))
        self.finite = flow.get("pair_finite", np.ones(len(flow["flow_fw"]), bool))
        self.skipped = {"uncomputed_pair": 0, "non_finite_pair": 0}

    def __call__(self, s: int, clip: np.ndarray) -> ChainedFlowClip | None:
        e = s + len(clip) - 1
        if not self.computed[s:e].all():
            self.skipped["uncomputed_pair"] += 1
            return None
        if not self.finite[s:e].all():
            self.skipped["non_finite_pair"] += 1
            return None
        return ChainedFlowClip(self.flow["flow_fw"][s:e], self.flow["flow_bw"][s:e], self.size)

    def log_skipped(self, video: str, windows: int) -> None:
        n = sum(self.skipped.values())
        if n:
            log.info("%s: teacher 'flow' skipped %d of %d windows (%d hold a pair outside the label budget, "
                     "%d a non-finite pair): their zero flow would pass verification", video, n, windows,
                     self.skipped["uncomputed_pair"], self.skipped["non_finite_pair"])


def flowpips_window_trackers(model, frames, flow: dict | None, teachers: Sequence[str], iters: int | None = None):
    """Per teacher, ``window_tracker(start, clip)`` for ``label_video``: "tracker" runs FlowPips
    on the clip (the paper's self-labelling); "flow" chains the teacher flow store's pairs of
    the clip (``flow``: ``read_teacher_flow``'s arrays; a :class:`FlowTeacherWindows`)."""
    H, W = frames.shape[1:3]
    out = {}
    for name in teachers:
        if name == "tracker":
            fw, bw, feats, offset = model.flow_and_features(frames)  # once per video, sliced per window
            out[name] = lambda s, clip: FlowPipsClip(model, clip, iters, (fw[s:s + len(clip) - 1], bw[s:s + len(clip) - 1],
                                                                          feats[s:s + len(clip)], offset))
        elif name == "flow":
            if flow is None:
                raise MotionRefineError("teacher 'flow' needs the teacher's flow store")
            out[name] = FlowTeacherWindows(flow, (H, W))
        else:
            raise MotionRefineError(f"unknown label teacher {name!r}; choose from {TEACHERS}")
    return out


def merge_teacher_labels(per_teacher: dict) -> dict:
    """Concatenate ``label_video`` outputs of several teachers; adds ``teacher`` (N,) int8
    (index into the order given) and per-teacher summaries under ``teachers``."""
    names = list(per_teacher)
    first = per_teacher[names[0]]
    out = {k: np.concatenate([per_teacher[n][k] for n in names])
           for k in ("tracks", "window_start", "speed", "speed_bin", "fb_dist", "origin")}
    out["teacher"] = np.concatenate([np.full(len(per_teacher[n]["tracks"]), i, np.int8) for i, n in enumerate(names)])
    out["hist_before"] = sum(per_teacher[n]["hist_before"] for n in names)
    out["hist_after"] = sum(per_teacher[n]["hist_after"] for n in names)
    out["window_starts"] = first["window_starts"]
    out["windows"] = {n: per_teacher[n]["windows"] for n in names}
    out["resolved"] = first["resolved"]
    out["teachers"] = {n: {"tracks": int(len(per_teacher[n]["tracks"])),
                           "seeds_kept": int(sum(w["seeds_kept"] for w in per_teacher[n]["windows"])),
                           "seeds": int(sum(w["seeds"] for w in per_teacher[n]["windows"])),
                           "windows_skipped": int(sum(bool(w.get("skipped")) for w in per_teacher[n]["windows"]))}
                       for n in names}
    return out


def make_flowpips_labels(frames_path: str | os.PathLike, checkpoint: str | os.PathLike, raft_checkpoint: str | os.PathLike,
                         out_path: str | os.PathLike, teacher_flow: str | os.PathLike | None = None,
                         teachers: Sequence[str] = TEACHERS, **cfg) -> dict:
    """Pseudo-labels of one video from the FlowPips ``checkpoint`` (on the RAFT-small weights
    ``raft_checkpoint``) and/or the teacher flow store
    ``teacher_flow`` (see ``flowpips_window_trackers``), each verified forward-backward over
    the window with θ scaled to the resolution, densified and re-balanced as ``label_video``;
    one labels store with a ``teacher`` array. Keyword arguments are TrackLabelConfig fields."""
    from motionrefine.models.pips.flowpips import load_flowpips

    c = TrackLabelConfig.from_dict(cfg)
    dev = pick_device(c.device, c.threads)
    model, digest = load_flowpips(checkpoint, raft_checkpoint, c.expected_sha256)
    model.to(dev)
    frames = np.asarray(open_group(frames_path)["frames"][...])
    T, H0, W0 = frames.shape[:3]
    H, W = tracking_size(H0, W0, c.max_pixels)
    frames = at_size(frames, (H, W))
    S = model.cfg.S
    if T < S:
        raise MotionRefineError(f"{frames_path}: {T} frames, fewer than one {S}-frame window")
    flow = None
    if "flow" in teachers:
        if teacher_flow is None:
            raise MotionRefineError("teacher 'flow' needs the teacher's flow store; none was given")
        flow = read_teacher_flow(teacher_flow, T, H0, W0, size=(H, W))
    video = c.video or Path(frames_path).name.removesuffix(".zarr")
    started = time.perf_counter()
    fns = flowpips_window_trackers(model, frames, flow, teachers)  # the model's own update iterations
    per = {n: label_video(frames, None, c, S=S, window_tracker=fn) for n, fn in fns.items()}
    if "flow" in fns:
        fns["flow"].log_skipped(video, len(per["flow"]["windows"]))
    labels = merge_teacher_labels(per)
    seconds = time.perf_counter() - started
    res = labels["resolved"]
    summary = {"video": video, "tracks": int(len(labels["tracks"])), "teachers": labels["teachers"],
               "theta": res["theta"], "dense_w": res["dense_w"], "seconds": round(seconds, 3),
               "checkpoint_sha256": digest}
    attrs = {
        "format_version": LABEL_FORMAT_VERSION, "video": video, "frames_path": str(frames_path),
        "num_frames": int(T), "height": int(H), "width": int(W), "S": int(S),
        "stored_height": int(H0), "stored_width": int(W0),
        "window_stride": int(c.window_stride or S // 2), "checkpoint": str(checkpoint), "checkpoint_sha256": digest,
        "model_size": "flow-small", "teacher_names": list(per), "teachers": labels["teachers"],
        "teacher_flow": str(teacher_flow) if teacher_flow is not None else None,
        "theta": res["theta"], "theta_ref": c.theta_ref, "w": res["dense_w"], "dense_w_ref": c.dense_w_ref,
        "grid_spacing": res["grid_spacing"], "queries": c.queries,
        "speed_bins": edges_json(c.speed_edges), "speed_units": c.speed_units, "speed_scale": res["speed_scale"],
        "rebalance": c.rebalance, "windows": labels["windows"], "config": c.to_dict(), "code_version": __version__,
        "seconds": round(seconds, 3), "device": str(dev),
        "convention": "tracks[i, s] = (x, y) px at frame window_start[i] + s of the frames store resized to "
                      "height x width; all visible; "
                      "teacher[i] indexes teacher_names",
    }
    write_track_labels(labels, out_path, attrs)
    log.info("%s: %s tracks kept per teacher (%.1f s) -> %s", video,
             {n: v["tracks"] for n, v in labels["teachers"].items()}, seconds, out_path)
    return summary
