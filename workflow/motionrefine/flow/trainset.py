"""The training-set index: which verified pairs of which label stores fine-tuning reads.

``aggregate_labels`` writes a small JSON index of the usable pairs (no arrays are copied);
``load_training_pairs`` reads it back for fine-tuning. ``label_stats_table`` tabulates the
label stores' coverage for the report. The label stores themselves are ``flow.labels``'.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from motionrefine import __version__
from motionrefine.core.errors import AssetMissingError, MotionRefineError
from motionrefine.core.store import open_group, write_text_atomic
from motionrefine.flow.cycle import REASONS

INDEX_FORMAT = "motionrefine.training_set/1"


def fingerprint(arr, *indices) -> str:
    """sha256 over the shape and a few leading-index slices: a cheap identity for a big array."""
    h = hashlib.sha256(repr(tuple(arr.shape)).encode())
    for i in indices:
        h.update(np.ascontiguousarray(arr[i]).tobytes())
    return h.hexdigest()


def video_name(path: str | os.PathLike) -> str:
    name = Path(path).name
    return name[: -len(".zarr")] if name.endswith(".zarr") else name



def check_frames_store(label_attrs: dict, frames_group, labels_path, frames_path):
    """The frames array of ``frames_group``, refused unless it is the one the label store
    (``label_attrs``) was labelled from: same shape and fingerprint."""
    if "frames" not in frames_group:
        raise MotionRefineError(f"{frames_path}: no array 'frames' in the store")
    fr = frames_group["frames"]
    want = label_attrs.get("frames_store", {})
    if list(fr.shape) != list(want.get("shape", fr.shape)) or (
            want.get("fingerprint") and want["fingerprint"] != fingerprint(fr, 0, fr.shape[0] - 1)):
        raise MotionRefineError(f"{frames_path} is not the frames store {labels_path} was labelled from "
                                f"({want.get('path')})")
    return fr


@dataclass(frozen=True)
class TrainingPair:
    video: str
    frames: str  # frames store path
    labels: str  # label store path
    pair: int  # frames pair, pair+1
    kept_fraction: float
    direction: str = "fw"  # fw: frame pair -> pair+1; bw: pair+1 -> pair


def aggregate_labels(label_paths: Sequence[str], frames_paths: Sequence[str], out_path: str,
                     min_kept_fraction: float = 0.0) -> dict:
    """Index every pair with kept_fraction > ``min_kept_fraction`` into a JSON file.

    Paths are stored relative to the index's folder, so a results tree can move. All label
    stores must come from one checkpoint (mixing models' pseudo-labels is refused) and each
    frames store must be the one its labels were made from (shape and fingerprint).
    """
    if len(label_paths) != len(frames_paths):
        raise MotionRefineError(f"{len(label_paths)} label stores but {len(frames_paths)} frames stores")
    if not label_paths:
        raise MotionRefineError("aggregate_labels: no label stores given")
    out = Path(out_path)
    base = out.parent.resolve()
    videos, pairs, shas = [], [], set()
    for lp, fp in zip(label_paths, frames_paths):
        g = open_group(lp)
        attrs = dict(g.attrs)
        check_frames_store(attrs, open_group(fp), lp, fp)
        shas.add(attrs.get("checkpoint_sha256"))
        kf = np.asarray(g["kept_fraction"][:])
        labelled = labelled_pairs(g)
        video = attrs.get("video", video_name(lp))
        rel_l = os.path.relpath(Path(lp).resolve(), base)
        rel_f = os.path.relpath(Path(fp).resolve(), base)
        # Pairs outside the label budget carry no labels and are never indexed.
        used = [int(i) for i in np.flatnonzero((kf > min_kept_fraction) & labelled)]
        videos.append({"video": video, "labels": rel_l, "frames": rel_f, "pairs": len(kf), "used_pairs": len(used),
                       "labelled_pairs": int(labelled.sum()), "input_size": attrs.get("input_size"),
                       "kept_fraction": float(kf[labelled].mean()) if labelled.any() else 0.0})
        pairs.extend({"video": video, "pair": i, "kept_fraction": float(kf[i])} for i in used)
        if "kept_fraction_bw" in g:  # reverse pairs, labelled by the same check
            kb = np.asarray(g["kept_fraction_bw"][:])
            used_bw = [int(i) for i in np.flatnonzero((kb > min_kept_fraction) & labelled)]
            videos[-1]["used_pairs_bw"] = len(used_bw)
            pairs.extend({"video": video, "pair": i, "kept_fraction": float(kb[i]), "direction": "bw"}
                         for i in used_bw)
    if len(shas) > 1:
        raise MotionRefineError(f"label stores come from different checkpoints: {sorted(map(str, shas))}")
    if len({v["video"] for v in videos}) != len(videos):
        raise MotionRefineError("two label stores share a video name")
    index = {"format": INDEX_FORMAT, "checkpoint_sha256": shas.pop(), "code_version": __version__,
             "min_kept_fraction": min_kept_fraction, "videos": videos, "pairs": pairs}
    write_text_atomic(out, json.dumps(index, indent=1))
    return {"videos": len(videos), "pairs": len(pairs), "checkpoint_sha256": index["checkpoint_sha256"]}


def load_training_pairs(index: str | os.PathLike | dict | Iterable[TrainingPair],
                        videos: Sequence[str] | None = None) -> list[TrainingPair]:
    """The pairs of a training-set index (path or parsed dict), optionally restricted to ``videos``.
    A list of :class:`TrainingPair` passes through (filtered the same way)."""
    if isinstance(index, (str, os.PathLike)):
        p = Path(index)
        if not p.is_file():
            raise AssetMissingError(f"training-set index not found: {p}")
        data, base = json.loads(p.read_text()), p.parent
    elif isinstance(index, dict):
        data, base = index, Path(".")
    else:
        items = list(index)
        return [x for x in items if videos is None or x.video in videos]
    if data.get("format") != INDEX_FORMAT:
        raise MotionRefineError(f"not a training-set index ({data.get('format')!r}, expected {INDEX_FORMAT!r})")
    by_video = {v["video"]: v for v in data["videos"]}
    out = []
    for row in data["pairs"]:
        if videos is not None and row["video"] not in videos:
            continue
        v = by_video[row["video"]]
        out.append(TrainingPair(row["video"], str(base / v["frames"]), str(base / v["labels"]), int(row["pair"]),
                                float(row["kept_fraction"]), row.get("direction", "fw")))
    return out


def labelled_pairs(g) -> np.ndarray:
    """(P,) bool: the pairs of a label store that carry labels (stores made before the label
    budget label every pair)."""
    if "labelled" in g:
        return np.asarray(g["labelled"][:], bool)
    return np.ones(g["kept_fraction"].shape[0], bool)


def label_stats_table(label_paths: Sequence[str]) -> pd.DataFrame:
    """One row per labelled (video, pair): kept fraction overall and per speed bin, rejection counts."""
    frames = []
    for lp in label_paths:
        g = open_group(lp)
        attrs = dict(g.attrs)
        edges = [float(x) for x in np.asarray(g["speed_bin_edges"][:])]
        kf = np.asarray(g["kept_fraction"][:])
        df = pd.DataFrame({"video": attrs.get("video", video_name(lp)), "pair": np.arange(len(kf)),
                           "kept_fraction": kf, "kept_count": np.asarray(g["kept_count"][:])})
        fb = np.asarray(g["kept_fraction_by_bin"][:])
        pb = np.asarray(g["pixels_by_bin"][:])
        for k in range(len(edges) - 1):
            label = f"{edges[k]:g}-{edges[k + 1]:g}"
            df[f"kept_fraction_speed_{label}"] = fb[:, k]
            df[f"pixels_speed_{label}"] = pb[:, k]
        rej = np.asarray(g["rejected"][:])
        for j, reason in enumerate(g["rejected"].attrs.get("columns", list(REASONS))):
            df[f"rejected_{reason}"] = rej[:, j]
        df["checks"] = attrs.get("checks")
        df["checkpoint_sha256"] = attrs.get("checkpoint_sha256")
        frames.append(df[labelled_pairs(g)].reset_index(drop=True))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

