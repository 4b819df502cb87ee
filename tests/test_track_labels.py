"""Tracker pseudo-labels: windows and queries, forward-backward verification, densification,
speed re-balancing, the labels store, and the tracker evaluation table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from motionrefine.track import densify
from motionrefine.track import evaluate as track_eval
from motionrefine.track.trackers import zero_motion_tracker
from motionrefine.track import labels as track_labels
from motionrefine.track import teachers as track_teachers
from motionrefine.core.errors import MotionRefineError
from motionrefine.models.pips import Pips, save_pips
from motionrefine.io.readers import TrackScene
from motionrefine.core.store import write_array, atomic_group

torch.set_num_threads(1)

S, H, W = 8, 48, 64
U = np.array([1.0, 0.5])   # true motion per frame
DRIFT_X = 40.0             # queries right of this drift on the forward clip


def _clip(T=S, h=H, w=W):
    """Frames that carry their own index in pixel (0, 0), so a fake tracker knows the time order."""
    f = np.zeros((T, h, w, 3), np.uint8)
    f[:, 0, 0, 0] = np.arange(T)
    return f


def fake_track_fn(frames, queries):
    """Moves points with the true motion U (undoing it on a reversed clip); on the forward
    clip, points queried right of DRIFT_X also drift by +1.5 px per frame, so the backward
    pass from their end point does not return to the query."""
    t = frames[:, 0, 0, 0].astype(np.float64)
    steps = t - t[0]
    q = np.asarray(queries, np.float64)
    out = q[None] + steps[:, None, None] * U
    drift = (q[:, 0] > DRIFT_X) & (t[-1] > t[0])
    out[:, drift, 0] += 1.5 * np.arange(len(frames))[:, None]
    return out.astype(np.float32)


# --------------------------------------------------------------------------- verification, densification

def test_verification_keeps_returning_track_and_drops_drifting_one():
    seeds = np.array([[10.0, 20.0], [45.0, 20.0]])  # second one drifts
    wl = densify.verify_and_densify(fake_track_fn, _clip(), seeds, theta=2.0, w=0)
    assert (wl.n_seeds, wl.n_seeds_kept, wl.n_dense) == (2, 1, 0)
    expected = seeds[0] + np.arange(S)[:, None] * U
    np.testing.assert_allclose(wl.tracks[0], expected, atol=1e-5)
    assert wl.origin.tolist() == [0]
    assert wl.fb_dist[0] < 1e-5
    # a generous threshold keeps the drifting one too: forward and backward differ by 1.5·(S−1)·2 at frame 0
    wl2 = densify.verify_and_densify(fake_track_fn, _clip(), seeds, theta=1.5 * (S - 1) * 2 + 0.1, w=0)
    assert wl2.n_seeds_kept == 2


def test_densify_builds_the_w_by_w_grid_and_verifies_it():
    # seed A far from the drift region; seed B's grid straddles x = 40 (half its grid drifts)
    seeds = np.array([[10.0, 10.0], [40.0, 30.0]])
    w = 4
    wl = densify.verify_and_densify(fake_track_fn, _clip(), seeds, theta=1.0, w=w)
    assert wl.n_seeds_kept == 2  # B itself sits at x = 40, not right of it
    # each seed contributes w·w grid points minus the one that coincides with the seed
    assert wl.n_dense == 2 * (w * w - 1)
    dense_starts = wl.tracks[wl.origin == 1, 0]
    d = np.arange(w) - w // 2
    grid_a = {(10 + dx, 10 + dy) for dx in d for dy in d} - {(10, 10)}
    grid_b = {(40 + dx, 30 + dy) for dx in d for dy in d} - {(40, 30)}
    got = {tuple(p) for p in dense_starts.round().astype(int).tolist()}
    assert got == grid_a | {p for p in grid_b if p[0] <= DRIFT_X}
    assert wl.n_dense_kept == len(grid_a) + sum(p[0] <= DRIFT_X for p in grid_b)
    # the kept dense tracks follow the true motion
    np.testing.assert_allclose(wl.tracks[:, -1] - wl.tracks[:, 0], np.tile((S - 1) * U, (len(wl.tracks), 1)),
                               atol=1e-5)
    # densification only around a capped number of seeds
    wl3 = densify.verify_and_densify(fake_track_fn, _clip(), seeds, theta=1.0, w=w, max_dense_seeds=1,
                                     rng=np.random.default_rng(0))
    assert wl3.n_dense == w * w - 1


def test_windows_queries_and_resolution_scaling():
    assert densify.window_starts(20, 8) == [0, 4, 8, 12]
    assert densify.window_starts(21, 8) == [0, 4, 8, 12, 13]
    assert densify.window_starts(21, 8, stride=8, include_tail=False) == [0, 8]
    assert densify.window_starts(7, 8) == []
    assert densify.scaled_theta(256, 448) == pytest.approx(3.0)
    assert densify.scaled_theta(512, 896, theta_ref=1.5) == pytest.approx(3.0)
    assert densify.scaled_size(128, 224, 4) == 2
    g = densify.grid_queries(48, 64, spacing=10, margin=4)
    assert g.min() >= 4 and g[:, 0].max() <= 59 and g[:, 1].max() <= 43
    assert len(np.unique(g[:, 0])) == 6 and len(np.unique(g[:, 1])) == 4
    img = np.zeros((48, 64, 3), np.uint8)
    img[10:30, 20:40] = 255  # a white square: four corners
    c = densify.corner_queries(img, max_corners=10, min_distance=5)
    assert len(c) == 4
    assert {tuple(p) for p in np.round(c).astype(int).tolist()} <= {
        (x, y) for x in (19, 20, 39, 40) for y in (9, 10, 29, 30)}
    cfg = track_labels.TrackLabelConfig()
    r = cfg.resolved(128, 224)
    assert r["theta"] == pytest.approx(1.5) and r["dense_w"] == 2 and r["speed_scale"] == pytest.approx(2.0)
    with pytest.raises(MotionRefineError):
        track_labels.TrackLabelConfig(rebalance="bins")


# --------------------------------------------------------------------------- re-balancing

def _tracks_with_speeds(speeds):
    # straight tracks of the given px/frame speed (divisor S: path over S−1 steps / S)
    v = np.asarray(speeds, np.float64) * S / (S - 1)
    return np.stack([np.stack([v * t, np.zeros_like(v)], axis=1) for t in range(S)], axis=1)


def test_rebalance_caps_bins_as_configured():
    speeds = [0.2] * 60 + [1.5] * 20 + [3.0] * 10 + [6.0] * 10
    tr = _tracks_with_speeds(speeds)
    keep, sp, bins, share = track_labels.rebalance_tracks(tr, "cap", max_share=0.4, rng=np.random.default_rng(1))
    np.testing.assert_allclose(sp, speeds, rtol=1e-6)  # returned as float32
    assert bins.tolist() == [0] * 60 + [1] * 20 + [2] * 10 + [3] * 10
    counts = np.bincount(bins[keep], minlength=4)
    # cap c is the largest with c <= 0.4·(min(60,c) + min(20,c) + 10 + 10): c = 26 gives 0.4·66 = 26.4
    assert counts.tolist() == [26, 20, 10, 10]
    assert counts.max() <= 0.4 * counts.sum() and share == 0.4
    # filter: only tracks faster than min_speed
    keep_f, *_ = track_labels.rebalance_tracks(tr, "filter", min_speed=2.0)
    assert keep_f.sum() == 20 and (np.asarray(speeds)[keep_f] > 2.0).all()
    # none keeps everything; reference units scale the speed (a half-size video moves half as far)
    keep_n, sp_n, bins_n, _ = track_labels.rebalance_tracks(tr, "none", speed_scale=2.0)
    assert keep_n.all() and np.allclose(sp_n, 2 * np.asarray(speeds))
    assert bins_n.tolist() == [0] * 60 + [2] * 20 + [3] * 20
    # one occupied bin: the cap is raised to the feasible 1.0 rather than failing
    keep_1, _, _, share_1 = track_labels.rebalance_tracks(_tracks_with_speeds([0.2] * 5), "cap", max_share=0.5)
    assert keep_1.all() and share_1 == 1.0
    h = track_labels.speed_histogram(sp, (0, 1, 2, 4.5, np.inf))
    assert h.tolist() == [60, 20, 10, 10]


# --------------------------------------------------------------------------- labels store

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("ckpt") / "pips-small-random.pth"
    save_pips(Pips("small"), p)
    return p


def _frames_store(path, frames):
    with atomic_group(path) as g:
        write_array(g, "frames", frames)


def test_label_video_with_fake_tracker_and_store_layout(tmp_path):
    T = 12
    frames = _clip(T)
    cfg = dict(grid_spacing=12, margin_ref=4, theta=1.0, dense_w=2, max_dense_seeds=None, rebalance="cap",
               max_share=1.0)
    out = track_labels.label_video(frames, fake_track_fn, cfg, S=S)
    assert out["window_starts"].tolist() == [0, 4]
    for wdw in out["windows"]:
        assert wdw["seeds_kept"] < wdw["seeds"]  # the drifting right part is rejected
    n = len(out["tracks"])
    assert n == sum(wdw["tracks"] for wdw in out["windows"])
    assert (out["tracks"][:, 0, 0] <= DRIFT_X).all()
    assert out["hist_before"].sum() == n and out["hist_after"].sum() == n
    assert set(out["window_start"].tolist()) == {0, 4}


def test_make_track_labels_writes_store_with_provenance(tmp_path, tiny_checkpoint):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (10, 64, 72, 3), dtype=np.uint8)  # small PIPs needs >= 64 px (stride 8 · 2³)
    fpath = tmp_path / "frames" / "vid.zarr"
    _frames_store(fpath, frames)
    out = tmp_path / "labels" / "vid.zarr"
    # a random tracker verifies little at a tight θ; a huge θ keeps everything (layout test)
    s = track_labels.make_track_labels(fpath, tiny_checkpoint, out, grid_spacing=24, theta=1e6, dense_w=2,
                                       max_dense_seeds=2, rebalance="none", iters=2)
    lab = track_labels.read_track_labels(out)
    n = s["tracks"]
    assert n > 0 and lab["tracks"].shape == (n, S, 2)
    for k in ("window_start", "speed_bin", "speed", "fb_dist", "origin"):
        assert lab[k].shape == (n,)
    assert lab["hist_before"].tolist() == lab["hist_after"].tolist() and lab["hist_before"].sum() == n
    a = lab["attrs"]
    assert a["video"] == "vid" and a["theta"] == 1e6 and a["w"] == 2
    assert a["speed_bins"] == [0.0, 1.0, 2.0, 4.5, "inf"]
    assert len(a["checkpoint_sha256"]) == 64 and a["code_version"]
    assert a["window_stride"] == 4 and [w["start"] for w in a["windows"]] == [0, 2]
    # tight θ with an untrained tracker: an empty but valid store
    out2 = tmp_path / "labels" / "vid2.zarr"
    s2 = track_labels.make_track_labels(fpath, tiny_checkpoint, out2, grid_spacing=24, theta=1e-6, iters=2)
    lab2 = track_labels.read_track_labels(out2)
    assert s2["tracks"] == 0 and lab2["tracks"].shape == (0, S, 2)


# --------------------------------------------------------------------------- evaluation table

def test_evaluate_trackers_oracle_beats_zero_motion():
    T, n = 10, 6
    rng = np.random.default_rng(0)
    start = rng.uniform(5, 40, (n, 2))
    tracks = (start[:, None] + np.arange(T)[None, :, None] * np.array([2.0, 1.0])).astype(np.float32)
    occ = np.zeros((n, T), bool)
    occ[0, 5:] = True
    scene = TrackScene("moving", np.zeros((T, 64, 128, 3), np.uint8), tracks, occ, np.zeros(n, np.int64))

    def oracle(frames, queries):
        return tracks.copy(), occ.copy()

    df = track_eval.evaluate_trackers([scene], {"oracle": oracle, "zero": zero_motion_tracker()})
    o = df[df.tracker == "oracle"].iloc[0]
    z = df[df.tracker == "zero"].iloc[0]
    assert o.delta_avg == 1.0 and o.aj == 1.0 and o.oa == 1.0 and o.survival == 1.0 and o.mte == 0.0
    assert z.delta_avg < 0.6 and z.mte > 0 and z.oa < 1.0
    # zero motion: in 256×256 units (x·2, y·4) the error at frame t is t·|(4, 4)| = 5.66·t, so only
    # frame 1 is within 8 and frames 1–2 within 16; 49 visible scored points, 6 tracks visible at 1 and 2
    assert z.delta_avg == pytest.approx((6 / 49 + 12 / 49) / 5)
    assert list(track_eval.summary_table(df).index) == ["oracle", "zero"]


# --------------------------------------------------------------------------- the flow teacher under a label budget

def _teacher_store(path, T, computed, finite=None):
    """A teacher flow store whose computed pairs carry the true motion U; the others are zeros,
    as flow.inference writes the pairs outside a label budget."""
    fw = np.zeros((T - 1, H, W, 2), np.float32)
    fw[computed] = U
    bw = -fw
    with atomic_group(path) as g:
        write_array(g, "flow_fw", fw)
        write_array(g, "flow_bw", bw)
        write_array(g, "pair_computed", np.asarray(computed, bool))
        write_array(g, "pair_finite", np.ones(T - 1, bool) if finite is None else np.asarray(finite, bool))


def _flow_teacher_labels(store, T):
    frames = _clip(T)
    flow = track_teachers.read_teacher_flow(store, T, H, W)
    # the flow teacher needs no model
    fn = track_teachers.flowpips_window_trackers(None, frames, flow, ["flow"])["flow"]
    cfg = dict(grid_spacing=12, margin_ref=4, theta=1.0, dense_w=2, max_dense_seeds=None, rebalance="none")
    return track_labels.label_video(frames, None, cfg, S=S, window_tracker=fn), fn, flow


def test_flow_teacher_labels_no_window_with_an_uncomputed_pair(tmp_path):
    T = 24  # windows at 0, 4, 8, 12, 16
    # fully computed: every window is labelled with the true motion
    _teacher_store(tmp_path / "full.zarr", T, np.ones(T - 1, bool))
    full, fn, _ = _flow_teacher_labels(tmp_path / "full.zarr", T)
    assert set(full["window_start"].tolist()) == {0, 4, 8, 12, 16} and sum(fn.skipped.values()) == 0
    moved = full["tracks"][:, -1] - full["tracks"][:, 0]
    np.testing.assert_allclose(moved, np.tile((S - 1) * U, (len(moved), 1)), atol=1e-4)
    # budgeted: one computed pair in the first window (the 6 zero pairs pass verification unless
    # skipped), and a gap at pair 10 in an otherwise computed span
    computed = np.ones(T - 1, bool)
    computed[[0, 1, 2, 4, 5, 6, 10]] = False
    store = tmp_path / "budget.zarr"
    _teacher_store(store, T, computed)
    lab, fn, flow = _flow_teacher_labels(store, T)
    assert flow["pair_computed"].tolist() == computed.tolist()
    for s in lab["window_start"]:
        assert computed[s:s + S - 1].all(), f"a label from window {s}, which holds an uncomputed pair"
    assert set(lab["window_start"].tolist()) == {12, 16} and len(lab["tracks"]) > 0
    assert fn.skipped == {"uncomputed_pair": 3, "non_finite_pair": 0}
    assert [w["start"] for w in lab["windows"] if w.get("skipped")] == [0, 4, 8]
    assert track_teachers.merge_teacher_labels({"flow": lab})["teachers"]["flow"]["windows_skipped"] == 3
    # a non-finite pair (its bad values stored as zeros) is skipped the same way
    finite = np.ones(T - 1, bool)
    finite[14] = False
    _teacher_store(tmp_path / "nan.zarr", T, np.ones(T - 1, bool), finite)
    lab_nan, fn_nan, _ = _flow_teacher_labels(tmp_path / "nan.zarr", T)
    assert set(lab_nan["window_start"].tolist()) == {0, 4, 16}
    assert fn_nan.skipped == {"uncomputed_pair": 0, "non_finite_pair": 2}


def test_read_teacher_flow_rejects_a_store_of_another_video(tmp_path):
    _teacher_store(tmp_path / "t.zarr", 12, np.ones(11, bool))
    with pytest.raises(MotionRefineError, match="12 pairs at 48x64"):
        track_teachers.read_teacher_flow(tmp_path / "t.zarr", 13, H, W)


def test_make_flowpips_labels_reads_the_budget_of_the_teacher_store(tmp_path):
    from conftest import ROOT, SHARED, require_asset

    T = 24
    _frames_store(tmp_path / "frames.zarr", _clip(T))
    computed = np.zeros(T - 1, bool)
    computed[[3, 14]] = True  # a budget that keeps one pair in about ten
    _teacher_store(tmp_path / "teacher.zarr", T, computed)
    s = track_teachers.make_flowpips_labels(
        tmp_path / "frames.zarr", require_asset(ROOT / "weights/flowpips-small-synth.pth"),
        require_asset(SHARED / "weights/raft-small.pth"), tmp_path / "labels.zarr",
        teacher_flow=tmp_path / "teacher.zarr", teachers=("flow",), theta=1.0, rebalance="none", device="cpu")
    lab = track_labels.read_track_labels(tmp_path / "labels.zarr")
    # every window holds an uncomputed pair: no flow-teacher labels, and the store says why
    assert s["tracks"] == 0 and lab["tracks"].shape[0] == 0
    assert lab["attrs"]["teachers"]["flow"]["windows_skipped"] == 5
    assert all(w["skipped"] for w in lab["attrs"]["windows"]["flow"])
