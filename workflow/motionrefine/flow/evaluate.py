"""Before/after evaluation of flow models on benchmark scenes (per-scene rows, pandas)."""

from __future__ import annotations

import hashlib
import logging
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from motionrefine import __version__
from motionrefine.core.device import pick_device
from motionrefine.flow.inference import FlowEstimator
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
                  device: str = "auto", alternate_corr_pixels: int | None = None) -> pd.DataFrame:
    """One row per (model, scene): EPE, 1/3/5 px accuracy, Fl-all (and _noc/_occ where masks exist).

    ``models`` maps a label (e.g. 'pretrained', 'refined') to a checkpoint path. Every model sees
    the same frames and the same metric code, so the rows compare like with like.
    """
    dev = pick_device(device, threads)
    scenes = list(scenes)
    digests = [scene_sha256(s) for s in scenes]
    rows = []
    for label, path in models.items():
        model, digest = load_raft(path, variant, alternate_corr_pixels=alternate_corr_pixels)
        est = FlowEstimator(model.to(dev), iters=iters, padding=padding, device=dev)
        for scene, scene_digest in zip(scenes, digests):
            pred = predict_scene(est, scene)
            row = flow_scene_metrics(scene, pred)
            row.update({"benchmark": benchmark or scene.meta.get("benchmark", ""), "model": label,
                        "checkpoint_sha256": digest, "pairs": scene.num_pairs, "iters": iters,
                        "variant": variant, "scene_sha256": scene_digest, "code_version": __version__})
            rows.append(row)
            log.info("%s %s/%s: EPE %.3f", label, row["benchmark"], scene.name, row["epe"])
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
