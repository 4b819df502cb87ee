"""Flow and point-tracking metrics (numpy; torch tensors are accepted and moved to numpy).

Flow (Sintel / KITTI / Middlebury conventions), arrays (..., H, W, 2):
- EPE = mean end-point error ‖pred − gt‖₂ over valid pixels, pooled over every pixel
  passed in (Sintel's "all" EPE pools the pixels of all frames; call once per pair and
  average if a per-image mean is wanted).
- acc_Npx = fraction of valid pixels with EPE < N, for N in 1, 3, 5.
- fl_all = KITTI outlier rate: EPE > 3 px AND EPE > 5 % of ‖gt‖.
- optional ``_noc`` / ``_occ`` variants on non-occluded / occluded valid pixels.

Tracking, TAP-Vid (Doersch et al. 2022), coordinates in pixels of the 256×256 frames:
- Scored frames: with ``query_mode="first"`` only frames strictly *after* the query
  frame (the protocol assumes everything before the first visible frame is occluded);
  with ``"strided"`` every frame except the query frame, before it included.
- δ^x = fraction of gt-visible scored points within x px (strict ``<``), ignoring the
  predicted occlusion; δ_avg = mean over x ∈ {1, 2, 4, 8, 16}.
- OA = fraction of scored points whose predicted occlusion flag equals the gt flag.
- Jaccard_x = TP / (TP + FP + FN), TP = gt-visible, predicted visible and within x;
  FP = predicted visible but gt-occluded or not within x; FN = gt-visible but predicted
  occluded or not within x. A visible, predicted-visible point beyond x is both an FP and
  an FN. TP + FN = all gt-visible points, which is how it is computed. AJ = mean over x.
- Counts are pooled over all tracks and frames of one video; a benchmark score is the
  mean over videos (``summarise``).

Tracking, PIPs style: survival (fraction of frames before the first one with error
> 16 px), MTE (per-track median L2 over frames, averaged over tracks) and δ_avg on
gt-visible points without any occlusion term.

Empty denominators give NaN rather than a misleading 0 or 1.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from motionrefine.core.errors import MotionRefineError

TAPVID_THRESHOLDS = (1, 2, 4, 8, 16)
FLOW_ACC_THRESHOLDS = (1, 3, 5)
SURVIVAL_THRESHOLD = 16.0


def _np(x, dtype=None) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, possibly on GPU / requiring grad
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _ratio(num, den) -> float:
    return float(num) / float(den) if den else float("nan")


# --------------------------------------------------------------------------- flow


def epe_map(pred, gt, channel_axis: int = -1) -> np.ndarray:
    """Per-pixel end-point error ‖pred − gt‖₂; non-finite predictions count as infinite error."""
    p, g = _np(pred, np.float64), _np(gt, np.float64)
    if p.shape != g.shape or p.shape[channel_axis] != 2:
        raise MotionRefineError(f"pred {p.shape} and gt {g.shape} must match with 2 channels on axis {channel_axis}")
    epe = np.sqrt(np.sum((p - g) ** 2, axis=channel_axis))
    return np.where(np.isfinite(epe), epe, np.inf)


def flow_metrics(pred, gt, valid=None, occluded=None, channel_axis: int = -1) -> dict:
    """EPE, 1/3/5 px accuracy and Fl-all over ``valid`` pixels (all if None).

    With ``occluded`` the same keys are also given with suffix ``_noc`` and ``_occ``.
    ``n_px`` (etc.) is the number of pixels each block was computed on.
    """
    epe = epe_map(pred, gt, channel_axis)
    mag = np.sqrt(np.sum(_np(gt, np.float64) ** 2, axis=channel_axis))
    valid = np.ones(epe.shape, bool) if valid is None else _np(valid, bool)
    if valid.shape != epe.shape:
        raise MotionRefineError(f"valid mask {valid.shape} does not match flow {epe.shape}")
    # Pixels without ground truth carry no information on the gt magnitude either.
    valid = valid & np.isfinite(mag)
    outlier = (epe > 3.0) & (epe > 0.05 * np.where(np.isfinite(mag), mag, 0.0))

    def block(mask, suffix):
        n = int(mask.sum())
        e = epe[mask]
        out = {f"epe{suffix}": float(e.mean()) if n else float("nan")}
        for x in FLOW_ACC_THRESHOLDS:
            out[f"acc_{x}px{suffix}"] = _ratio((e < x).sum(), n)
        out[f"fl_all{suffix}"] = _ratio(outlier[mask].sum(), n)
        out[f"n_px{suffix}"] = n
        return out

    result = block(valid, "")
    if occluded is not None:
        occ = _np(occluded, bool)
        if occ.shape != epe.shape:
            raise MotionRefineError(f"occlusion mask {occ.shape} does not match flow {epe.shape}")
        result.update(block(valid & ~occ, "_noc"))
        result.update(block(valid & occ, "_occ"))
    return result


def flow_scene_metrics(scene, pred_flow) -> dict:
    """Metrics of a :class:`readers.FlowScene` against predictions (T−1, H, W, 2), with ``scene`` name."""
    return {"scene": scene.name, **flow_metrics(pred_flow, scene.flow, scene.valid, scene.occluded)}


# --------------------------------------------------------------------------- tracking: TAP-Vid


def _track_inputs(gt_tracks, pred_tracks, gt_occluded=None, pred_occluded=None):
    g, p = _np(gt_tracks, np.float64), _np(pred_tracks, np.float64)
    if g.ndim != 3 or g.shape[-1] != 2 or p.shape != g.shape:
        raise MotionRefineError(f"tracks must be (N, T, 2) and match: gt {g.shape}, pred {p.shape}")
    n, t = g.shape[:2]
    go = None if gt_occluded is None else _flags(gt_occluded, "gt_occluded")
    po = None if pred_occluded is None else _flags(pred_occluded, "pred_occluded")
    for what, m in (("gt_occluded", go), ("pred_occluded", po)):
        if m is not None and m.shape != (n, t):
            raise MotionRefineError(f"{what} must be (N={n}, T={t}), got {m.shape}")
    return g, p, go, po


def _flags(x, what: str) -> np.ndarray:
    """Occlusion flags as bool; float probabilities must be thresholded by the caller,
    since a silent cast would turn every non-zero probability into 'occluded'."""
    a = _np(x)
    if a.dtype.kind == "f" and not np.isin(a, (0.0, 1.0)).all():
        raise MotionRefineError(f"{what} must be boolean flags; threshold occlusion probabilities first")
    return a.astype(bool)


def _query_frames(query_frame, n: int, t: int) -> np.ndarray:
    q = _np(query_frame)
    if q.ndim == 2 and q.shape[1] == 3:  # (t, ., .) query points: time is column 0
        q = q[:, 0]
    q = np.round(q).astype(np.int64)
    if q.shape != (n,):
        raise MotionRefineError(f"query_frame must be (N={n},), got {q.shape}")
    if n and (q.min() < 0 or q.max() >= t):
        raise MotionRefineError(f"query frames must lie in [0, {t})")
    return q


def tapvid_eval_mask(query_frame, num_frames: int, query_mode: str = "first") -> np.ndarray:
    """(N, T) bool: which frames of each track are scored under the TAP-Vid protocol."""
    q = _np(query_frame).astype(np.int64)[:, None]
    t = np.arange(num_frames)[None, :]
    if query_mode == "first":
        return t > q
    if query_mode == "strided":
        return t != q
    raise MotionRefineError(f"query_mode must be 'first' or 'strided', got {query_mode!r}")


def tapvid_metrics(gt_tracks, gt_occluded, pred_tracks, pred_occluded, query_frame,
                   query_mode: str = "first", thresholds: Sequence[float] = TAPVID_THRESHOLDS) -> dict:
    """TAP-Vid metrics of one video (see module doc). ``pred_occluded=None`` means all predicted visible.

    ``query_frame`` is (N,) ints, or (N, 3) query points whose column 0 is the frame.
    Keys: ``delta_<x>``, ``delta_avg``, ``jaccard_<x>``, ``aj``, ``oa``, ``n_visible``, ``n_scored``.
    """
    g, p, go, po = _track_inputs(gt_tracks, pred_tracks, gt_occluded, pred_occluded)
    n, t = g.shape[:2]
    if go is None:
        raise MotionRefineError("gt_occluded is required for TAP-Vid metrics")
    if po is None:
        po = np.zeros_like(go)
    scored = tapvid_eval_mask(_query_frames(query_frame, n, t), t, query_mode)
    gt_vis = ~go & scored
    pred_vis = ~po & scored
    dist2 = np.sum((p - g) ** 2, axis=-1)
    dist2 = np.where(np.isfinite(dist2), dist2, np.inf)

    out = {"oa": _ratio(np.sum((po == go) & scored), scored.sum())}
    deltas, jaccards = [], []
    n_vis = int(gt_vis.sum())
    for x in thresholds:
        within = dist2 < float(x) ** 2
        d = _ratio(np.sum(within & gt_vis), n_vis)
        tp = np.sum(within & gt_vis & pred_vis)
        fp = np.sum(pred_vis & (~gt_vis | ~within))  # gt-occluded, or too far
        fn = n_vis - tp  # gt-visible but predicted occluded, or too far
        jac = _ratio(tp, tp + fp + fn)
        key = f"{x:g}"
        out[f"delta_{key}"] = d
        out[f"jaccard_{key}"] = jac
        deltas.append(d)
        jaccards.append(jac)
    out["delta_avg"] = float(np.mean(deltas))
    out["aj"] = float(np.mean(jaccards))
    out["n_visible"] = n_vis
    out["n_scored"] = int(scored.sum())
    return out


def track_scene_metrics(scene, pred_tracks, pred_occluded=None) -> dict:
    """TAP-Vid metrics of a :class:`readers.TrackScene`, using the scene's own query mode, with ``scene`` name."""
    return {"scene": scene.name, **tapvid_metrics(scene.tracks, scene.occluded, pred_tracks, pred_occluded,
                                                  scene.query_frame, scene.query_mode)}


# --------------------------------------------------------------------------- tracking: PIPs


def track_errors(gt_tracks, pred_tracks) -> np.ndarray:
    """(N, T) L2 distance between predicted and ground-truth positions (inf where non-finite)."""
    g, p, _, _ = _track_inputs(gt_tracks, pred_tracks)
    err = np.sqrt(np.sum((p - g) ** 2, axis=-1))
    return np.where(np.isfinite(err), err, np.inf)


def pips_metrics(gt_tracks, pred_tracks, valid=None, query_frame=None,
                 survival_threshold: float = SURVIVAL_THRESHOLD,
                 thresholds: Sequence[float] = TAPVID_THRESHOLDS) -> dict:
    """PIPs-style metrics, averaged over tracks.

    ``valid`` (N, T) marks frames with usable ground truth (e.g. gt-visible); default all.
    ``query_frame`` (N,) starts each track's window there (earlier frames ignored); default 0.
    - survival: per track, (first scored frame with error > threshold − start) / (T − start),
      1.0 if it never fails; frames outside ``valid`` cannot fail.
    - mte: per track, median error over its valid frames, then mean over tracks that have one.
    - mean_l2: the same with the mean (the "MTE/ATE" printed by the PIPs scripts).
    - delta_<x> / delta_avg: fraction of valid points within x px, pooled, no occlusion term.
    """
    err = track_errors(gt_tracks, pred_tracks)
    n, t = err.shape
    ok = np.ones((n, t), bool) if valid is None else _np(valid, bool)
    if ok.shape != (n, t):
        raise MotionRefineError(f"valid must be (N={n}, T={t}), got {ok.shape}")
    start = np.zeros(n, np.int64) if query_frame is None else _query_frames(query_frame, n, t)
    ok = ok & (np.arange(t)[None, :] >= start[:, None])

    failed = ok & (err > survival_threshold)
    first_fail = np.where(failed.any(axis=1), np.argmax(failed, axis=1), t)
    survival = (first_fail - start) / (t - start)

    medians, means = [], []
    for i in range(n):
        e = err[i, ok[i]]
        if e.size:
            medians.append(np.median(e))
            means.append(np.mean(e))
    out = {
        "survival": float(np.mean(survival)) if n else float("nan"),
        "mte": float(np.mean(medians)) if medians else float("nan"),
        "mean_l2": float(np.mean(means)) if means else float("nan"),
    }
    deltas = []
    for x in thresholds:
        d = _ratio(np.sum((err < x) & ok), ok.sum())
        out[f"delta_{x:g}"] = d
        deltas.append(d)
    out["delta_avg"] = float(np.mean(deltas))
    out["n_tracks"] = n
    return out


# --------------------------------------------------------------------------- tables


def summarise(rows: Iterable[dict], key: str = "scene") -> pd.DataFrame:
    """Per-scene table indexed by ``rows[i][key]`` plus a final ``"mean"`` row.

    The mean is the unweighted mean over scenes of each numeric column, NaNs skipped
    (TAP-Vid and per-scene Sintel results are averaged this way).
    """
    rows = list(rows)
    if not rows:
        raise MotionRefineError("summarise() needs at least one row")
    missing = [i for i, r in enumerate(rows) if key not in r]
    if missing:
        raise MotionRefineError(f"rows {missing} have no {key!r} entry")
    df = pd.DataFrame(rows).set_index(key)
    names = [str(s) for s in df.index]
    if "mean" in names or len(set(names)) != len(names):
        raise MotionRefineError(f"scene names must be unique and not 'mean': {names}")
    numeric = df.select_dtypes(include="number")
    mean_row = numeric.mean(axis=0, skipna=True).to_frame().T
    mean_row.index = pd.Index(["mean"], name=key)
    return pd.concat([df, mean_row.reindex(columns=df.columns)], axis=0)
