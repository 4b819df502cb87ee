"""Before/after evaluation of flow models on benchmark scenes (per-scene rows, pandas)."""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from motionrefine import __version__
from motionrefine.core.device import pick_device
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import open_group, sha256_file
from motionrefine.flow.inference import FlowEstimator
from motionrefine.flow.teacher import Teacher, TeacherSettings
from motionrefine.bench.metrics import flow_scene_metrics
from motionrefine.models.checkpoint import load_raft
from motionrefine.io.readers import FlowScene

log = logging.getLogger("motionrefine")


def predict_scene(est: FlowEstimator, scene: FlowScene, window: int = 8) -> np.ndarray:
    """Forward flow for every consecutive pair of ``scene`` (T−1, H, W, 2), in windows of frames."""
    out = []
    t = len(scene.frames)
    for s in range(0, t - 1, window):
        fw, _ = est.pairs(scene.frames[s:min(s + window, t - 1) + 1], backward=False)
        out.append(fw)
    return np.concatenate(out, axis=0)


def scene_sha256(scene: FlowScene) -> str:
    """Identity of what a scene row was measured on: its frames and ground truth."""
    h = hashlib.sha256()
    for a in (scene.frames, scene.flow, scene.valid):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def evaluate_flow(models: Mapping[str, str], scenes: Iterable[FlowScene], variant: str = "small",
                  iters: int = 12, padding: str = "even", threads: int = 1, benchmark: str = "",
                  device: str = "auto", alternate_corr_pixels: int | None = None,
                  teacher: TeacherSettings | None = None, timed: bool = False) -> pd.DataFrame:
    """One row per (model, scene): EPE, 1/3/5 px accuracy, Fl-all (and _noc/_occ where masks exist).

    ``models`` maps a label (e.g. 'pretrained', 'refined') to a checkpoint path. Every model sees
    the same frames and the same metric code, so the rows compare like with like.
    ``teacher``: run each model as the label-maker (``flow.teacher``; its iterations replace
    ``iters``). ``timed``: add ``seconds_per_pair``, the scene's inference time per pair after
    one warm-up pair.
    """
    dev = pick_device(device, threads)
    scenes = list(scenes)
    digests = [scene_sha256(s) for s in scenes]
    rows = []
    done: dict[str, list[dict]] = {}  # checkpoint sha256 -> its rows
    for label, path in models.items():
        digest = sha256_file(path)
        # The guard's choice is a copy of the trained or the pretrained file: same weights, same
        # rows (an untimed evaluation is deterministic), so they are not computed twice.
        if digest in done and not timed:
            rows += [{**r, "model": label} for r in done[digest]]
            continue
        model, digest = load_raft(path, variant, alternate_corr_pixels=alternate_corr_pixels)
        first = len(rows)
        run_iters = teacher.iters if teacher is not None else iters
        est = FlowEstimator(model.to(dev), iters=run_iters, padding=padding, device=dev)
        if teacher is not None:
            est = Teacher(est, teacher)
        for scene, scene_digest in zip(scenes, digests):
            if timed:
                # The first pass pays for allocation and kernel selection: not the model's cost.
                est.pairs(scene.frames[:2], backward=False)
            started = time.perf_counter()
            pred = predict_scene(est, scene)
            seconds = time.perf_counter() - started  # pairs() returns numpy: the device is done
            row = flow_scene_metrics(scene, pred)
            row.update({"benchmark": benchmark or scene.meta.get("benchmark", ""), "model": label,
                        "checkpoint_sha256": digest, "pairs": scene.num_pairs, "iters": run_iters,
                        "variant": variant, "scene_sha256": scene_digest, "code_version": __version__})
            if timed:
                row["seconds_per_pair"] = seconds / max(scene.num_pairs, 1)
            rows.append(row)
            log.info("%s %s/%s: EPE %.3f", label, row["benchmark"], scene.name, row["epe"])
        done[digest] = rows[first:]
    return pd.DataFrame(rows)


def before_after(df: pd.DataFrame, before: str = "pretrained", after: str = "refined",
                 metrics: tuple[str, ...] = ("epe", "acc_1px", "acc_3px", "acc_5px", "fl_all")) -> pd.DataFrame:
    """Wide per-scene table: metric_before, metric_after, and the % EPE change (negative = better)."""
    keys = ["benchmark", "scene"]
    a = df[df["model"] == before].set_index(keys)[list(metrics)]
    b = df[df["model"] == after].set_index(keys)[list(metrics)]
    wide = a.add_suffix(f"_{before}").join(b.add_suffix(f"_{after}"), how="inner")
    wide["epe_change_pct"] = 100.0 * (wide[f"epe_{after}"] / wide[f"epe_{before}"] - 1.0)
    return wide.reset_index()


TEACHER_COLUMNS = ("scene", "benchmark", "model", "epe", "seconds_per_pair")


def teacher_store_row(store_path: str, scene: FlowScene, benchmark: str = "") -> dict | None:
    """The teacher's row of a scene from its label-making store (results/teacher/{video}.zarr):
    EPE of the very flow the labels were verified from, and its seconds per pair and direction
    (the store's recorded label-making time over both directions, halved), with no second run.
    None when the store's label budget left some pairs out."""
    g = open_group(store_path)
    if "flow_fw" not in g:
        raise MotionRefineError(f"{store_path}: no array 'flow_fw' (not a teacher flow store)")
    if "pair_computed" in g and not bool(np.asarray(g["pair_computed"][...]).all()):
        return None  # a label budget left pairs out: the scene is not covered
    fw = np.asarray(g["flow_fw"][...], np.float32)
    if fw.shape != scene.flow.shape:
        raise MotionRefineError(f"{store_path}: teacher flow {fw.shape} does not match scene {scene.name} "
                                f"{scene.flow.shape}")
    attrs = dict(g.attrs)
    teacher = attrs.get("teacher") or {}
    row = flow_scene_metrics(scene, fw)
    pairs = max(int(attrs.get("pairs", scene.num_pairs)), 1)
    row.update({"benchmark": benchmark or scene.meta.get("benchmark", ""), "model": "teacher",
                "checkpoint_sha256": attrs.get("checkpoint_sha256"), "pairs": scene.num_pairs,
                "iters": attrs.get("iters", teacher.get("iters")), "scene_sha256": scene_sha256(scene),
                "code_version": __version__,
                "seconds_per_pair": float(attrs["seconds"]) / (2 * pairs) if "seconds" in attrs else np.nan})
    log.info("teacher %s/%s (from %s): EPE %.3f", row["benchmark"], scene.name, store_path, row["epe"])
    return row


def teacher_vs_student(checkpoint: str, scenes: Iterable[FlowScene], teacher: TeacherSettings,
                       teacher_stores: Sequence[str] | None = None, **student) -> pd.DataFrame:
    """The checkpoint at the student's settings (``student``: evaluate_flow keywords) and at the
    teacher's on the same scenes, timed: rows with model 'student' and 'teacher'.

    ``teacher_stores`` (pairs with ``scenes``): read the teacher's rows from the label-making
    stores (:func:`teacher_store_row`) instead of running the teacher again."""
    scenes = list(scenes)
    stu = evaluate_flow({"student": checkpoint}, scenes, **student, timed=True)
    if teacher_stores is None:
        tea = evaluate_flow({"teacher": checkpoint}, scenes, **student, teacher=teacher, timed=True)
    else:
        if len(teacher_stores) != len(scenes):
            raise MotionRefineError(f"{len(scenes)} scenes but {len(teacher_stores)} teacher stores")
        rows = [teacher_store_row(p, sc, student.get("benchmark", "")) for p, sc in zip(teacher_stores, scenes)]
        # A scene its store does not cover whole is run at the teacher's settings here.
        missing = [sc for sc, r in zip(scenes, rows) if r is None]
        tea = pd.DataFrame([r for r in rows if r is not None]).assign(variant=student.get("variant", "small"))
        if missing:
            tea = pd.concat([tea, evaluate_flow({"teacher": checkpoint}, missing, **student, teacher=teacher, timed=True)],
                            ignore_index=True)
    df = pd.concat([stu, tea], ignore_index=True)
    return df[list(TEACHER_COLUMNS) + [c for c in df.columns if c not in TEACHER_COLUMNS]]
