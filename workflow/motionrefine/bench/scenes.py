"""Benchmark scenes for the evaluate stage: generated real-texture scenes and readers of
published datasets, behind one interface (:class:`readers.FlowScene`)."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from motionrefine import __version__
from motionrefine.bench import synth
from motionrefine.core.errors import MotionRefineError
from motionrefine.bench.metrics import epe_map
from motionrefine.config.plan import READER_KINDS, TRACK_KINDS
from motionrefine.io.readers import FlowScene, TrackScene, iter_benchmark, read_tapvid
from motionrefine.core.store import atomic_group, open_group, write_array
from motionrefine.io.video import frames_source

log = logging.getLogger("motionrefine")


def _source_frames(frame_stores: Sequence[str], per_store: int = 4) -> list[np.ndarray]:
    """A few frames spread over each source video: backgrounds and layer textures."""
    out = []
    for path in frame_stores:
        frames = open_group(path)["frames"]
        idx = np.linspace(0, frames.shape[0] - 1, min(per_store, frames.shape[0])).round().astype(int)
        out.extend(np.asarray(frames[i]) for i in sorted(set(idx.tolist())))
    return out


def build_realtex_scene(frame_stores: Sequence[str], out_path: str, preset: str, height: int, width: int,
                        frames: int, seed: int, overrides: dict | None = None, checkpoint: str | None = None,
                        variant: str = "small", iters: int = 12) -> dict:
    """Render one real-texture scene from the users' own frames and check its ground truth.

    The ground-truth self-check (warping frame t+1 by the forward flow reproduces frame t,
    forward/backward flows invert each other) must pass, or no scene is written. With a
    ``checkpoint``, the pretrained model's EPE on the scene is printed and stored, so a user
    sees whether the scene is hard enough to show a refinement.
    """
    sources = _source_frames(frame_stores)
    cfg = synth.make_config(preset, height=height, width=width, frames=frames, seed=seed, **(overrides or {}))
    seq = synth.render_sequence(sources, cfg)
    check = synth.self_check(seq)
    if not check.get("ok", False):
        raise MotionRefineError(f"{out_path}: ground-truth self-check failed: {check}")
    attrs = {"preset": preset, "self_check": check, "sources": [str(p) for p in frame_stores],
             "source_identities": [frames_source(dict(open_group(p).attrs)) for p in frame_stores],
             "code_version": __version__}
    if checkpoint:
        from motionrefine.flow.inference import FlowEstimator
        from motionrefine.bench.metrics import flow_metrics
        from motionrefine.models.checkpoint import load_raft

        model, digest = load_raft(checkpoint, variant)
        pred, _ = FlowEstimator(model, iters=iters).pairs(seq.frames, backward=False)
        epe = flow_metrics(pred, seq.flow_fw)["epe"]
        attrs["pretrained_epe"] = {"epe": epe, "checkpoint_sha256": digest, "iters": iters}
        print(f"{out_path}: preset {preset}, pretrained EPE {epe:.3f} px", flush=True)
    synth.write_sequence(seq, out_path, attrs=attrs)
    log.info("%s: preset %s, self-check %s, pretrained EPE %s", out_path, preset, check,
             attrs.get("pretrained_epe", {}).get("epe"))
    return {**check, **({"pretrained_epe": attrs["pretrained_epe"]["epe"]} if checkpoint else {})}


def load_flow_scene(kind: str, name: str, path: str, benchmark: str = "", options: dict | None = None) -> FlowScene:
    """One scene: a generated store (``kind`` real-texture, ``path`` = its Zarr) or a dataset scene."""
    if kind == "real-texture":
        seq = synth.read_sequence(path)
        return FlowScene(name=name, frames=seq.frames, flow=seq.flow_fw.astype(np.float32),
                         valid=np.ones(seq.flow_fw.shape[:3], bool), occluded=seq.occ_fw.astype(bool),
                         meta={"benchmark": benchmark, "kind": kind})
    if kind not in READER_KINDS:
        raise MotionRefineError(f"benchmark {benchmark!r}: unknown flow kind {kind!r}")
    for scene in iter_benchmark(READER_KINDS[kind], path, scenes=[name], **(options or {})):
        scene.meta.update({"benchmark": benchmark, "kind": kind})
        return scene
    raise MotionRefineError(f"benchmark {benchmark!r}: scene {name!r} not found under {path}")


def load_scene(kind: str, name: str, path: str, benchmark: str = "", options: dict | None = None) -> FlowScene | TrackScene:
    """A benchmark scene to enter the label chain: a flow scene (``load_flow_scene``) or a
    TAP-Vid video, read as the tracking comparison reads it."""
    if kind not in TRACK_KINDS:
        return load_flow_scene(kind, name, path, benchmark, options)
    (scene,) = read_tapvid(path, videos=[name], **(options or {}))
    scene.meta.update({"benchmark": benchmark, "kind": kind})
    return scene


def write_scene_frames(scene: FlowScene | TrackScene, out_path: str, source: str) -> None:
    """A benchmark scene's frames as a frames store, so it enters the label chain like a video."""
    with atomic_group(out_path) as g:
        write_array(g, "frames", np.ascontiguousarray(scene.frames))
        t, h, w = scene.frames.shape[:3]
        g.attrs.update({"source": {"path": source, "benchmark": scene.meta.get("benchmark", ""),
                                   "scene": scene.name, "kind": scene.meta.get("kind", "")},
                        "stored_size": [w, h], "frame_count": t, "code_version": __version__})


def label_quality(label_path: str, scene: FlowScene, speed_edges: Sequence[float] = (0, 1, 2, 4.5),
                  student: np.ndarray | None = None) -> dict:
    """Accuracy of the kept pseudo-labels against ground truth: the number that says whether
    verification does its job (a forward-backward check passes some consistently wrong flow).

    ``student``: the student's forward flow on the scene (T−1, H, W, 2). Its EPE on the same kept
    pixels is what the label must beat to teach anything (the information gain); given, it is
    reported overall and per ground-truth speed bin beside the labels' own EPE."""
    g = open_group(label_path)
    keep = np.asarray(g["keep"][...], bool)
    labels = np.asarray(g["flow"][...], np.float32)
    if keep.shape != scene.valid.shape:
        raise MotionRefineError(f"{label_path}: labels {keep.shape} do not match scene {scene.name} {scene.valid.shape}")
    if student is not None and student.shape != labels.shape:
        raise MotionRefineError(f"student flow {student.shape} does not match labels {labels.shape} of {scene.name}")
    valid = scene.valid & np.isfinite(scene.flow).all(-1)
    if "labelled" in g:  # pairs outside the teacher's label budget are not scored
        valid &= np.asarray(g["labelled"][:], bool)[:, None, None]
    kept = keep & valid
    truth = np.where(valid[..., None], scene.flow, 0)
    err = epe_map(labels, truth)
    stu_err = epe_map(student.astype(np.float32), truth) if student is not None else None

    def mean_on(e, mask):
        return float(e[mask].mean()) if mask.any() else float("nan")

    row = {"scene": scene.name, "benchmark": scene.meta.get("benchmark", ""),
           "kept_fraction": float(kept.sum() / max(valid.sum(), 1)),
           "label_epe": mean_on(err, kept),
           "label_acc_1px": float((err[kept] < 1).mean()) if kept.any() else float("nan"),
           "n_kept": int(kept.sum())}
    if stu_err is not None:
        row["student_epe_on_kept"] = mean_on(stu_err, kept)
    speed = np.linalg.norm(truth, axis=-1)
    edges = list(speed_edges) + [np.inf]
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = valid & (speed >= lo) & (speed < hi)
        tag = f"{lo:g}-{hi:g}" if np.isfinite(hi) else f"{lo:g}+"
        row[f"kept_fraction_{tag}px"] = float((kept & in_bin).sum() / max(in_bin.sum(), 1))
        row[f"label_epe_{tag}px"] = mean_on(err, kept & in_bin)
        if stu_err is not None:
            row[f"student_epe_{tag}px"] = mean_on(stu_err, kept & in_bin)
    return row
