"""Chained-flow tracks, forward-backward track verification and query densification."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from motionrefine.core.errors import MotionRefineError
from motionrefine.models.pips import Pips
from motionrefine.track.chain import chain_flow_tracks, densify_queries, pips_track_fn, verify_tracks

torch.set_num_threads(1)

T, H, W = 6, 40, 60
U = np.array([1.5, -0.5])


def _constant_flows(u=U):
    fw = np.broadcast_to(np.asarray(u, np.float32), (T - 1, H, W, 2)).copy()
    return fw, -fw


def _expected(q):
    t0, x, y = q
    return np.array([[x + (t - t0) * U[0], y + (t - t0) * U[1]] for t in range(T)])


# --------------------------------------------------------------------------- chained flow

def test_chain_follows_constant_translation_exactly_including_late_queries():
    fw, bw = _constant_flows()
    queries = np.array([[0, 10.0, 20.0], [2, 20.25, 15.5], [5, 30.0, 10.0]])
    tracks, occ = chain_flow_tracks(fw, bw, queries)
    assert tracks.shape == (3, T, 2) and tracks.dtype == np.float32
    assert occ.shape == (3, T) and occ.dtype == bool
    for i, q in enumerate(queries):
        np.testing.assert_allclose(tracks[i], _expected(q), atol=1e-5)
    # hand-computed spot checks: frame 0 of the t=2 query, frame 4 of the t=0 query
    np.testing.assert_allclose(tracks[1, 0], [17.25, 16.5], atol=1e-5)
    np.testing.assert_allclose(tracks[0, 4], [16.0, 18.0], atol=1e-5)
    assert not occ.any()


def test_chain_marks_occlusion_where_backward_flow_disagrees():
    fw, bw = _constant_flows()
    bw[2, :, 30:] = 0.0  # pair (2, 3): the return flow from frame 3 is wrong for x >= 30
    queries = np.array([[0, 26.0, 20.0],   # x = 30.5 at frame 3: inside the bad region
                        [0, 10.0, 20.0]])  # never reaches it
    tracks, occ = chain_flow_tracks(fw, bw, queries)
    assert occ[0].tolist() == [False, False, False, True, False, False]
    assert not occ[1].any()
    np.testing.assert_allclose(tracks[0], _expected(queries[0]), atol=1e-5)  # keeps propagating

    tracks_s, occ_s = chain_flow_tracks(fw, bw, queries, stop_at_occlusion=True)
    assert occ_s[0].tolist() == [False, False, False, True, True, True]
    np.testing.assert_allclose(tracks_s[0, 3:], np.repeat(tracks_s[0, 2:3], 3, axis=0), atol=1e-6)
    np.testing.assert_allclose(tracks_s[1], tracks[1])


def test_chain_backward_part_checks_with_forward_flow():
    fw, bw = _constant_flows()
    fw[1, :, :20] = 0.0  # pair (1, 2) seen from frame 2 backwards: return flow wrong for x < 20
    q = np.array([[3, 21.0, 20.0]])  # frame 2: x = 19.5, frame 1: x = 18
    tracks, occ = chain_flow_tracks(fw, bw, q)
    # step 2 -> 1 samples bw[1] at frame 2 (x = 19.5), returns via fw[1] at x = 18: wrong -> occluded at 1
    assert occ[0].tolist() == [False, True, False, False, False, False]
    np.testing.assert_allclose(tracks[0], _expected(q[0]), atol=1e-5)


def test_chain_marks_points_that_leave_the_frame():
    fw, bw = _constant_flows()
    tracks, occ = chain_flow_tracks(fw, bw, np.array([[0, 57.0, 20.0]]))
    # x = 57, 58.5, 60 (> W-1 = 59) ...
    assert occ[0].tolist() == [False, False, True, True, True, True]
    assert np.isfinite(tracks).all()


def test_chain_pixel_threshold_mode_and_input_errors():
    fw, bw = _constant_flows()
    bw = bw + 0.3  # a 0.42 px cycle error everywhere
    q = np.array([[0, 10.0, 10.0]])
    assert chain_flow_tracks(fw, bw, q)[1][0, 1:].all()                   # strict label constants
    assert not chain_flow_tracks(fw, bw, q, alpha=0.0, beta=1.0)[1].any()  # 1 px threshold
    with pytest.raises(MotionRefineError):
        chain_flow_tracks(fw, bw, np.array([[T, 1.0, 1.0]]))
    with pytest.raises(MotionRefineError):
        chain_flow_tracks(fw, bw[:-1], q)


# --------------------------------------------------------------------------- densification

def test_densify_is_exactly_the_window_grid():
    pts = np.array([[30.7, 20.2]])
    g = densify_queries(pts, 24, 100, 100)
    assert g.shape == (576, 2) and g.dtype == np.int64
    assert g[:, 0].min() == 30 - 12 and g[:, 0].max() == 30 + 11
    assert g[:, 1].min() == 20 - 12 and g[:, 1].max() == 20 + 11
    assert len(np.unique(g, axis=0)) == 576
    # odd side: centred, still w×w
    g3 = densify_queries(np.array([[5.0, 5.0]]), 3, 20, 20)
    assert sorted(map(tuple, g3)) == [(x, y) for x in (4, 5, 6) for y in (4, 5, 6)]


def test_densify_deduplicates_and_clips():
    g = densify_queries(np.array([[10.0, 10.0], [11.0, 10.0]]), 4, 50, 50)
    assert len(g) == 5 * 4  # x in [8, 13), y in [8, 12)
    assert len(np.unique(g, axis=0)) == len(g)
    c = densify_queries(np.array([[1.0, 1.0]]), 6, 50, 50)  # x in [-2, 4) clipped to [0, 4)
    assert len(c) == 16 and c.min() == 0 and c.max() == 3
    e = densify_queries(np.array([[47.0, 2.0]]), 8, 10, 50)  # x in [43, 51) -> [43, 50); y in [-2, 6)
    assert len(e) == 7 * 6 and e[:, 0].max() == 49 and e[:, 1].max() == 5


# --------------------------------------------------------------------------- verification

S = 8
V = np.array([2.0, 1.0])


def _time_frames(S=S):
    """Frames whose pixel value is their time index, so a stand-in tracker can read time."""
    return np.stack([np.full((16, 16, 3), t, np.uint8) for t in range(S)])


def _stand_in(drift):
    """Tracks constant motion V exactly, plus a per-call-step drift (same in both directions)."""
    def track(frames, queries):
        times = frames[:, 0, 0, 0].astype(np.float64)
        steps = np.arange(len(frames))[:, None, None]
        return (queries[None] + (times - times[0])[:, None, None] * V + steps * drift[None]).astype(np.float32)
    return track


def test_verification_keeps_returning_tracks_and_drops_drifting_ones():
    q = np.array([[5.0, 5.0], [8.0, 3.0], [2.0, 9.0]])
    drift = np.array([[0.0, 0.0], [0.05, 0.0], [0.2, 0.1]])
    tracks, keep, dmax = verify_tracks(_stand_in(drift), _time_frames(), q, theta=1.5)
    assert tracks.shape == (3, S, 2)
    np.testing.assert_allclose(tracks[0], q[0] + np.arange(S)[:, None] * V)
    # forward ends at 7(V + d); going back and reversing gives P_b[t] = tV + (14 − t)d, so the
    # largest gap is at t = 0: 14‖d‖
    np.testing.assert_allclose(dmax, 14 * np.linalg.norm(drift, axis=1), atol=1e-5)
    assert keep.tolist() == [True, True, False]  # 0.7 px < 1.5 <= 3.13 px


def test_verification_rejects_non_finite_and_bad_shapes():
    def nan_tracker(frames, queries):
        out = _stand_in(np.zeros_like(queries))(frames, queries)
        out[3, 1] = np.nan
        return out
    _, keep, dmax = verify_tracks(nan_tracker, _time_frames(), np.array([[1.0, 1.0], [2.0, 2.0]]), theta=1.0)
    assert keep.tolist() == [True, False] and np.isinf(dmax[1])
    with pytest.raises(MotionRefineError):
        verify_tracks(lambda f, q: np.zeros((2, len(q), 2)), _time_frames(), np.zeros((3, 2)), theta=1.0)


def _replay(fwd, bwd):
    """A tracker returning given tracks (N, S, 2): ``fwd`` on the first call, then ``bwd``
    (already at frame t) reversed in time, as the backward pass over reversed frames would."""
    calls = iter([fwd.transpose(1, 0, 2), bwd.transpose(1, 0, 2)[::-1]])
    return lambda frames, queries: next(calls)


def test_verification_distance_at_every_frame():
    rng = np.random.default_rng(1)
    fwd = rng.uniform(0, 100, (5, 8, 2))
    bwd = fwd.copy()
    bwd[1, 3] += [1.0, 1.0]  # 1.41 px at one frame
    bwd[2, 7] += [3.0, 0.0]
    bwd[3, 0] = np.nan
    _, keep, _ = verify_tracks(_replay(fwd, bwd), _time_frames(), fwd[:, 0], theta=1.5)
    assert keep.tolist() == [True, True, False, False, True]
    _, keep, _ = verify_tracks(_replay(fwd, bwd), _time_frames(), fwd[:, 0], theta=1.4)
    assert keep.tolist() == [True, False, False, False, True]


def test_verification_with_a_pips_model_runs_both_directions():
    torch.manual_seed(0)
    model = Pips("small").eval()
    rng = np.random.default_rng(1)
    frames = (rng.random((S, 64, 64, 3)) * 255).astype(np.uint8)
    q = np.array([[20.0, 30.0], [40.5, 12.25], [5.0, 50.0]])
    tracks, keep, dmax = verify_tracks(model, frames, q, theta=1.5, iters=2)
    assert tracks.shape == (3, S, 2) and keep.shape == (3,) and dmax.shape == (3,)
    assert np.isfinite(tracks).all() and np.isfinite(dmax).all()
    np.testing.assert_allclose(tracks[:, 0], q, atol=1e-5)  # frame 0 is the query
    # chunked calls give the same tracks as one call
    one = pips_track_fn(model, iters=2, chunk=512)(frames, q)
    two = pips_track_fn(model, iters=2, chunk=2)(frames, q)
    np.testing.assert_allclose(one, two, atol=1e-4)
    np.testing.assert_allclose(one.transpose(1, 0, 2), tracks, atol=1e-5)
