"""Score point trackers (``track.trackers``) side by side on scenes with ground-truth tracks.

Scores per (tracker, scene): TAP-Vid δ_avg, AJ and OA on coordinates scaled to 256×256
(as ``metrics.tapvid_metrics`` expects), and PIPs-style survival and MTE on the same scaled
coordinates (so the 16 px survival threshold is the same fraction of the frame at every
resolution) over gt-visible frames; ``mte_px`` is the MTE in the scene's own pixels.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from motionrefine.bench.metrics import pips_metrics, tapvid_metrics
from motionrefine.core.errors import MotionRefineError
from motionrefine.track.eval_scenes import as_track_scene
from motionrefine.track.trackers import Tracker

log = logging.getLogger("motionrefine")

METRIC_COLUMNS = ("delta_avg", "aj", "oa", "survival", "mte", "mte_px")


def evaluate_trackers(scenes: Sequence, trackers: Mapping[str, Tracker | Mapping[str, Tracker]],
                      query_mode: str | None = None, keep: dict | None = None) -> pd.DataFrame:
    """One row per (tracker, scene): delta_avg, aj, oa (TAP-Vid), survival, mte (256×256
    units), mte_px (scene pixels), plus n_tracks, frames, height, width, seconds.

    ``scenes``: TrackScene or SynthSequence objects; ``trackers``: name → tracker callable, or
    name → {scene name: callable} for a tracker refined on each scene itself (transductive),
    which runs only on the scenes it names.
    ``keep``: if given, filled with (tracker, scene) → (tracks, occluded) predictions.
    """
    scenes = [as_track_scene(s, query_mode=query_mode) for s in scenes]
    if not scenes or not trackers:
        raise MotionRefineError("evaluate_trackers needs at least one scene and one tracker")
    names = [s.name for s in scenes]
    if len(set(names)) != len(names):
        raise MotionRefineError(f"scene names must be unique: {names}")
    rows = []
    for tname, spec in trackers.items():
        for sc in scenes:
            fn = spec.get(sc.name) if isinstance(spec, Mapping) else spec
            if fn is None:
                continue
            T, H, W = sc.frames.shape[:3]
            queries = np.concatenate([sc.query_frame[:, None].astype(np.float64),
                                      sc.tracks[np.arange(len(sc.tracks)), sc.query_frame].astype(np.float64)], axis=1)
            t0 = time.perf_counter()
            with torch.no_grad():
                pred, occ = fn(sc.frames, queries)
            seconds = time.perf_counter() - t0
            pred = np.asarray(pred, np.float64)
            occ = np.asarray(occ, bool)
            if keep is not None:
                keep[(tname, sc.name)] = (pred, occ)
            if pred.shape != sc.tracks.shape or occ.shape != sc.occluded.shape:
                raise MotionRefineError(f"tracker {tname!r} returned {pred.shape}/{occ.shape} on {sc.name}, "
                                        f"expected {sc.tracks.shape}/{sc.occluded.shape}")
            scale = np.array([256.0 / W, 256.0 / H])
            gt256, pred256 = sc.tracks * scale, pred * scale
            tv = tapvid_metrics(gt256, sc.occluded, pred256, occ, sc.query_frame, sc.query_mode)
            pm = pips_metrics(gt256, pred256, valid=~sc.occluded, query_frame=sc.query_frame)
            pm_px = pips_metrics(sc.tracks, pred, valid=~sc.occluded, query_frame=sc.query_frame)
            rows.append({"tracker": tname, "scene": sc.name, "delta_avg": tv["delta_avg"], "aj": tv["aj"],
                         "oa": tv["oa"], "survival": pm["survival"], "mte": pm["mte"], "mte_px": pm_px["mte"],
                         "n_tracks": len(sc.tracks), "frames": T, "height": H, "width": W, "seconds": seconds})
            log.info("%s on %s: delta_avg %.3f AJ %.3f OA %.3f survival %.3f MTE %.2f (%.1f s)", tname, sc.name,
                     tv["delta_avg"], tv["aj"], tv["oa"], pm["survival"], pm["mte"], seconds)
    return pd.DataFrame(rows)


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over scenes per tracker (rows in the order trackers were given)."""
    order = list(dict.fromkeys(df["tracker"]))
    return df.groupby("tracker")[list(METRIC_COLUMNS)].mean().loc[order]


def refinement_gains(df: pd.DataFrame, pairs: Mapping[str, str], metric: str = "delta_avg") -> pd.DataFrame:
    """Per scene, ``metric`` of each refined tracker minus its pretrained one (``pairs``:
    refined name → pretrained name), on the scenes both ran on; one row per (refined, scene)."""
    rows = []
    for refined, pretrained in pairs.items():
        a = df[df["tracker"] == pretrained].set_index("scene")[metric]
        b = df[df["tracker"] == refined].set_index("scene")[metric]
        for scene in [s for s in b.index if s in a.index]:
            rows.append({"tracker": refined, "versus": pretrained, "scene": scene, "before": float(a[scene]),
                         "after": float(b[scene]), "change": float(b[scene] - a[scene])})
    return pd.DataFrame(rows, columns=["tracker", "versus", "scene", "before", "after", "change"])
