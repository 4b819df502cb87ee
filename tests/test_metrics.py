"""Metrics against values worked out by hand in the comments (not by re-running the formulas)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from motionrefine.bench import metrics
from motionrefine.io import readers
from motionrefine.core.errors import MotionRefineError

MOTORCYCLE = Path(__file__).parents[2] / "shared" / "data" / "stereo" / "motorcycle"
approx = pytest.approx


# --------------------------------------------------------------------------- flow

# One row of four pixels (H=1, W=4):
#   px0 gt (0, 0)   pred (0, 0.5)  -> EPE 0.5
#   px1 gt (10, 0)  pred (13, 4)   -> EPE 5   (3-4-5); 5 > 3 and 5 > 0.05*10 -> Fl outlier
#   px2 gt (100, 0) pred (104, 0)  -> EPE 4;  4 > 3 but 4 < 0.05*100 = 5   -> not an outlier
#   px3 gt (0, 0)   pred (0, 2)    -> EPE 2
GT = np.array([[[0, 0], [10, 0], [100, 0], [0, 0]]], np.float32)
PRED = np.array([[[0, 0.5], [13, 4], [104, 0], [0, 2]]], np.float32)


def test_epe_map_by_hand():
    np.testing.assert_allclose(metrics.epe_map(PRED, GT), [[0.5, 5, 4, 2]])


def test_flow_metrics_all_pixels():
    m = metrics.flow_metrics(PRED, GT)
    assert m["epe"] == approx(11.5 / 4)  # (0.5 + 5 + 4 + 2) / 4
    assert m["acc_1px"] == approx(1 / 4)  # only 0.5 < 1
    assert m["acc_3px"] == approx(2 / 4)  # 0.5, 2
    assert m["acc_5px"] == approx(3 / 4)  # 0.5, 4, 2 (5 is not < 5)
    assert m["fl_all"] == approx(1 / 4)  # px1 only
    assert m["n_px"] == 4


def test_flow_metrics_valid_and_occlusion_split():
    valid = np.array([[False, True, True, True]])
    m = metrics.flow_metrics(PRED, GT, valid=valid)
    assert m["epe"] == approx(11 / 3)  # (5 + 4 + 2) / 3
    assert m["acc_1px"] == 0 and m["acc_3px"] == approx(1 / 3) and m["acc_5px"] == approx(2 / 3)
    assert m["fl_all"] == approx(1 / 3)

    occ = np.array([[False, True, False, False]])
    m = metrics.flow_metrics(PRED, GT, occluded=occ)
    assert m["epe"] == approx(11.5 / 4)
    assert m["epe_noc"] == approx(6.5 / 3)  # px0, px2, px3
    assert m["fl_all_noc"] == 0 and m["acc_3px_noc"] == approx(2 / 3)
    assert m["epe_occ"] == approx(5.0) and m["fl_all_occ"] == 1.0 and m["acc_5px_occ"] == 0.0
    assert m["n_px_occ"] == 1

    # An empty subset is NaN, not a perfect score.
    m = metrics.flow_metrics(PRED, GT, occluded=np.zeros((1, 4), bool))
    assert math.isnan(m["epe_occ"]) and m["n_px_occ"] == 0


def test_flow_metrics_torch_channels_first_and_nonfinite_prediction():
    pred = torch.from_numpy(PRED).permute(2, 0, 1)[None].requires_grad_()  # (1, 2, 1, 4)
    gt = torch.from_numpy(GT).permute(2, 0, 1)[None]
    m = metrics.flow_metrics(pred, gt, channel_axis=1)
    assert m["epe"] == approx(11.5 / 4) and m["fl_all"] == approx(1 / 4)

    bad = PRED.copy()
    bad[0, 0] = np.nan  # a NaN prediction must count as an error, not vanish
    m = metrics.flow_metrics(bad, GT)
    assert m["acc_1px"] == 0 and m["fl_all"] == approx(2 / 4) and m["epe"] == math.inf


def test_zero_flow_on_motorcycle_matches_reference_figure():
    """../shared/README: zero flow scores EPE 34.3 on Motorcycle (flow = (−d, 0) on finite d)."""
    if not (MOTORCYCLE / "motorcycle_disp.npz").exists():
        pytest.fail(f"shared Motorcycle data missing at {MOTORCYCLE}")
    (sc,) = readers.read_middlebury_stereo(MOTORCYCLE)
    m = metrics.flow_metrics(np.zeros_like(sc.flow), sc.flow, sc.valid)
    assert m["epe"] == approx(34.3, abs=0.05)
    assert m["fl_all"] == 1.0  # every disparity here is > 7 px


# --------------------------------------------------------------------------- TAP-Vid

# Two tracks x four frames, query_mode "first".
# Track 0: query frame 0; gt (10, 10) always; gt occluded [F, F, T, F]
#          pred errors [0, 0.5, 20, 3]; pred occluded [F, F, F, T]
# Track 1: query frame 1; gt (50, 50); gt occluded [T, F, F, F]
#          pred errors [-, 0 (query), 1.5, 6]; pred occluded [T, F, F, F]
GT_TRACKS = np.zeros((2, 4, 2), np.float32)
GT_TRACKS[0] = 10.0
GT_TRACKS[1] = 50.0
PRED_TRACKS = GT_TRACKS.copy()
PRED_TRACKS[0, 1, 0] += 0.5
PRED_TRACKS[0, 2, 0] += 20.0
PRED_TRACKS[0, 3, 0] += 3.0
PRED_TRACKS[1, 0] = (100.0, 100.0)
PRED_TRACKS[1, 2, 0] += 1.5
PRED_TRACKS[1, 3, 1] += 6.0
GT_OCC = np.array([[0, 0, 1, 0], [1, 0, 0, 0]], bool)
PRED_OCC = np.array([[0, 0, 0, 1], [1, 0, 0, 0]], bool)
QUERY = np.array([0, 1])


def test_tapvid_first_mode_by_hand():
    m = metrics.tapvid_metrics(GT_TRACKS, GT_OCC, PRED_TRACKS, PRED_OCC, QUERY, "first")
    # Scored: track 0 frames 1-3, track 1 frames 2-3 (the query frame and earlier are not).
    assert m["n_scored"] == 5
    # gt-visible scored points: (0,1) err .5, (0,3) err 3, (1,2) err 1.5, (1,3) err 6.
    assert m["n_visible"] == 4
    # OA: (0,1) ok, (0,2) pred vis/gt occ wrong, (0,3) pred occ/gt vis wrong, (1,2) ok, (1,3) ok.
    assert m["oa"] == approx(3 / 5)
    assert m["delta_1"] == approx(1 / 4)
    assert m["delta_2"] == approx(2 / 4)
    assert m["delta_4"] == approx(3 / 4)
    assert m["delta_8"] == 1.0 and m["delta_16"] == 1.0
    assert m["delta_avg"] == approx((0.25 + 0.5 + 0.75 + 1 + 1) / 5)
    # Predicted visible & scored: (0,1) .5 gt-vis, (0,2) gt-occ, (1,2) 1.5, (1,3) 6. (0,3) predicted occluded.
    # x=1:  TP {(0,1)}; FP {(0,2),(1,2),(1,3)}; FN {(0,3),(1,2),(1,3)}  -> 1/7
    # x=2:  TP {(0,1),(1,2)}; FP {(0,2),(1,3)}; FN {(0,3),(1,3)}        -> 2/6
    # x=4:  same as x=2                                                   -> 2/6
    # x=8:  TP {(0,1),(1,2),(1,3)}; FP {(0,2)}; FN {(0,3)}               -> 3/5
    # x=16: same as x=8 (the 20 px error is on a gt-occluded point)      -> 3/5
    expected = {1: 1 / 7, 2: 1 / 3, 4: 1 / 3, 8: 3 / 5, 16: 3 / 5}
    for x, j in expected.items():
        assert m[f"jaccard_{x}"] == approx(j), x
    assert m["aj"] == approx((1 / 7 + 1 / 3 + 1 / 3 + 3 / 5 + 3 / 5) / 5)


def test_tapvid_frames_before_query_depend_on_mode():
    pred_occ = PRED_OCC.copy()
    pred_occ[1, 0] = False  # now predicted visible at a gt-occluded frame before its query frame
    first = metrics.tapvid_metrics(GT_TRACKS, GT_OCC, PRED_TRACKS, pred_occ, QUERY, "first")
    assert first["oa"] == approx(3 / 5) and first["jaccard_1"] == approx(1 / 7)  # frame 0 of track 1 unscored

    # "strided" scores every frame but the query frame: track 1 frame 0 now counts.
    strided_ok = metrics.tapvid_metrics(GT_TRACKS, GT_OCC, PRED_TRACKS, PRED_OCC, QUERY, "strided")
    assert strided_ok["n_scored"] == 6
    assert strided_ok["oa"] == approx(4 / 6)  # pred occ = gt occ there
    assert strided_ok["aj"] == approx((1 / 7 + 1 / 3 + 1 / 3 + 3 / 5 + 3 / 5) / 5)  # TN adds nothing
    strided = metrics.tapvid_metrics(GT_TRACKS, GT_OCC, PRED_TRACKS, pred_occ, QUERY, "strided")
    assert strided["oa"] == approx(3 / 6)
    # One extra false positive at every threshold.
    for x, j in {1: 1 / 8, 2: 2 / 7, 4: 2 / 7, 8: 3 / 6, 16: 3 / 6}.items():
        assert strided[f"jaccard_{x}"] == approx(j), x
    assert strided["delta_avg"] == approx(0.7)  # δ ignores predicted occlusion


def test_tapvid_query_points_form_no_pred_occlusion_and_strict_threshold():
    qp = np.array([[0, 10, 10], [1, 50, 50]], np.float32)  # (t, y, x)
    m = metrics.tapvid_metrics(GT_TRACKS, GT_OCC, PRED_TRACKS, None, qp)
    # Everything predicted visible: OA = gt-visible share of scored points = 4/5.
    assert m["oa"] == approx(4 / 5)
    # Exactly 1 px away is NOT within 1 px (strict <), as in the reference.
    gt = np.zeros((1, 2, 2))
    pred = gt.copy()
    pred[0, 1, 0] = 1.0
    m = metrics.tapvid_metrics(gt, np.zeros((1, 2), bool), pred, np.zeros((1, 2), bool), [0])
    assert m["delta_1"] == 0.0 and m["delta_2"] == 1.0 and m["jaccard_1"] == 0.0


def test_tapvid_rejects_bad_shapes():
    with pytest.raises(MotionRefineError):
        metrics.tapvid_metrics(GT_TRACKS, GT_OCC, PRED_TRACKS[:, :3], PRED_OCC, QUERY)
    with pytest.raises(MotionRefineError, match="query"):
        metrics.tapvid_metrics(GT_TRACKS, GT_OCC, PRED_TRACKS, PRED_OCC, [0, 4])
    with pytest.raises(MotionRefineError, match="threshold"):
        metrics.tapvid_metrics(GT_TRACKS, GT_OCC, PRED_TRACKS, PRED_OCC * 0.7, QUERY)
    with pytest.raises(MotionRefineError, match="query_mode"):
        metrics.tapvid_metrics(GT_TRACKS, GT_OCC, PRED_TRACKS, PRED_OCC, QUERY, "every")


def test_track_scene_metrics_uses_scene_query_mode():
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    sc = readers.TrackScene("v", frames, GT_TRACKS, GT_OCC, QUERY, "strided")
    row = metrics.track_scene_metrics(sc, PRED_TRACKS, PRED_OCC)
    assert row["scene"] == "v" and row["oa"] == approx(4 / 6)


# --------------------------------------------------------------------------- PIPs

# Two tracks x four frames, errors along x:
#   track 0: [0, 5, 20, 3]  -> fails (> 16) at frame 2: survival 2/4; median (3+5)/2 = 4; mean 7
#   track 1: [0, 1, 2, 10]  -> never fails: survival 1;             median (1+2)/2 = 1.5; mean 3.25
ERRS = np.array([[0, 5, 20, 3], [0, 1, 2, 10]], np.float64)
P_GT = np.zeros((2, 4, 2))
P_PRED = np.stack([ERRS, np.zeros_like(ERRS)], axis=-1)


def test_pips_metrics_by_hand():
    m = metrics.pips_metrics(P_GT, P_PRED)
    assert m["survival"] == approx((0.5 + 1.0) / 2)
    assert m["mte"] == approx((4 + 1.5) / 2)
    assert m["mean_l2"] == approx((7 + 3.25) / 2)
    # Pooled errors {0,5,20,3,0,1,2,10}: <1: 2, <2: 3, <4: 5, <8: 6, <16: 7 of 8.
    assert [m[f"delta_{x}"] for x in (1, 2, 4, 8, 16)] == approx([2 / 8, 3 / 8, 5 / 8, 6 / 8, 7 / 8])
    assert m["delta_avg"] == approx(23 / 40)


def test_pips_metrics_visibility_and_query_window():
    valid = np.ones((2, 4), bool)
    valid[0, 2] = False  # the 20 px error is on a gt-occluded frame: not a failure, not scored
    m = metrics.pips_metrics(P_GT, P_PRED, valid=valid)
    assert m["survival"] == 1.0
    assert m["mte"] == approx((3 + 1.5) / 2)  # median of [0, 5, 3] = 3
    assert m["delta_avg"] == approx((2 + 3 + 5 + 6 + 7) / 35)

    # Track 0 starts at frame 1: window [5, 20, 3] fails at its 2nd frame -> 1/3.
    m = metrics.pips_metrics(P_GT, P_PRED, query_frame=[1, 0])
    assert m["survival"] == approx((1 / 3 + 1) / 2)
    assert m["mte"] == approx((5 + 1.5) / 2)  # median of [5, 20, 3] = 5


def test_track_errors_accepts_torch():
    e = metrics.track_errors(torch.zeros(2, 4, 2), torch.from_numpy(P_PRED))
    np.testing.assert_allclose(e, ERRS)


# --------------------------------------------------------------------------- summary table


def test_summarise_mean_row():
    rows = [
        {"scene": "alley_1", "epe": 1.0, "aj": 0.5, "note": "x"},
        {"scene": "bamboo_2", "epe": 3.0, "aj": float("nan"), "note": "y"},
    ]
    df = metrics.summarise(rows)
    assert isinstance(df, pd.DataFrame)
    assert list(df.index) == ["alley_1", "bamboo_2", "mean"]
    assert df.loc["mean", "epe"] == approx(2.0)
    assert df.loc["mean", "aj"] == approx(0.5)  # NaN skipped
    assert df.loc["alley_1", "note"] == "x"
    with pytest.raises(MotionRefineError, match="unique"):
        metrics.summarise([{"scene": "a", "epe": 1}, {"scene": "a", "epe": 2}])
    with pytest.raises(MotionRefineError):
        metrics.summarise([])
