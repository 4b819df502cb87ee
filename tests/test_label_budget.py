"""The teacher's label budget (pair stride, pair cap, megapixel cap) and labels verified
in the label-making job: the same stores as the teacher's flow store verified afterwards."""

import json

import numpy as np
import pytest
import torch

from conftest import SHARED, require_asset
from motionrefine.core.store import open_group
from motionrefine.flow.inference import FlowEstimator, flow_stage
from motionrefine.flow.labels import aggregate_labels, label_stats_table, load_training_pairs, make_flow_labels, \
    make_teacher_labels
from motionrefine.flow.teacher import TeacherSettings, pair_windows
from motionrefine.io.video import extract_frames
from motionrefine.models.checkpoint import load_raft

WEIGHTS = SHARED / "weights/raft-small.pth"
VERIFY = {"alpha": 0.002, "beta": 0.5, "colour": 0.02, "max_flow": 400.0, "checks": "fb+colour",
          "speed_bins": (0, 1, 2, 4.5)}


@pytest.fixture
def keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_select_pairs_stride_cap_and_megapixels():
    assert TeacherSettings().select_pairs(23, 144, 192).tolist() == list(range(23))  # no budget: all
    assert TeacherSettings(pair_stride=3).select_pairs(10, 10, 10).tolist() == [0, 3, 6, 9]
    # A cap spreads the pairs evenly over the video, first and last included.
    assert TeacherSettings(max_pairs=4).select_pairs(10, 10, 10).tolist() == [0, 3, 6, 9]
    assert TeacherSettings(pair_stride=2, max_pairs=3).select_pairs(10, 10, 10).tolist() == [0, 4, 8]
    # Megapixels count the upsampled frame: 540x960 at x2 capped to 1 Mpx is ~1 Mpx per pair.
    t = TeacherSettings(scales=(2.0,), max_pixels=1_000_000, max_megapixels=12.0)
    sel = t.select_pairs(59, 540, 960)
    assert len(sel) == 12 and sel[0] == 0 and sel[-1] == 58 and np.all(np.diff(sel) > 0)
    assert len(t.select_pairs(23, 144, 192)) == 23  # small frames stay within the budget
    assert TeacherSettings(max_megapixels=1e-6).select_pairs(5, 100, 100).tolist() == [0]  # never none
    with pytest.raises(ValueError, match="budget"):
        TeacherSettings(pair_stride=0)


def test_pair_windows_share_frames_within_runs_of_consecutive_pairs():
    assert pair_windows(np.arange(10), 4) == [(0, 4), (4, 8), (8, 10)]  # the flow stage's windows
    assert pair_windows(np.array([0, 1, 2, 5, 7, 8]), 2) == [(0, 2), (2, 3), (5, 6), (7, 9)]
    assert pair_windows(np.array([], int), 4) == []


def test_chunked_refinement_equals_one_batch(keep_torch_threads):
    torch.set_num_threads(1)
    model, _ = load_raft(str(require_asset(WEIGHTS)), "small")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 64, 96, 3), np.uint8)
    one = FlowEstimator(model, iters=3).pairs(frames)
    chunked_est = FlowEstimator(model, iters=3, max_corr_bytes=1)  # one direction per chunk
    assert chunked_est._chunk(torch.zeros(4, 1, 8, 12), 4) == 1
    chunked = chunked_est.pairs(frames)
    for a, b in zip(one, chunked):
        np.testing.assert_allclose(a, b, atol=1e-3)  # batch-size-dependent float rounding only


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    out = tmp_path_factory.mktemp("budget") / "frames.zarr"
    extract_frames(require_asset(SHARED / "data/videos/tree.avi"), out, start=0, end=8, stride=1, resize="64x48")
    return str(out)


TEACHER = TeacherSettings(scales=(2.0,), iters=3, flip=True, pair_stride=2, max_pairs=3)  # pairs 0, 4, 6


def test_budget_is_respected_recorded_and_missing_pairs_are_never_trained_on(frames, tmp_path, keep_torch_threads):
    out = tmp_path / "labels.zarr"
    summary = make_teacher_labels(frames, str(out), str(WEIGHTS), TEACHER, batch_size=2, device="cpu", **VERIFY)
    g = open_group(out)
    labelled = np.asarray(g["labelled"][:])
    assert summary["pairs"] == 7 and summary["labelled_pairs"] == 3
    assert np.flatnonzero(labelled).tolist() == [0, 4, 6]
    budget = g.attrs["label_budget"]
    assert (budget["pair_stride"], budget["max_pairs"], budget["labelled_pairs"]) == (2, 3, [0, 4, 6])
    assert g.attrs["flow_store"]["teacher"]["label_budget"] == budget and g.attrs["flow_store"]["fused"] is True
    keep, keep_bw = np.asarray(g["keep"][...]), np.asarray(g["keep_bw"][...])
    assert keep[labelled].any() and not keep[~labelled].any() and not keep_bw[~labelled].any()
    assert not np.asarray(g["flow"][...])[~labelled].any()
    # Only labelled pairs reach the statistics and the training set, both directions.
    assert label_stats_table([str(out)])["pair"].tolist() == [0, 4, 6]
    index = tmp_path / "index.json"
    aggregate_labels([str(out)], [frames], str(index), min_kept_fraction=-1.0)  # would take every pair
    assert {(p.pair, p.direction) for p in load_training_pairs(str(index))} <= {(i, d) for i in (0, 4, 6)
                                                                              for d in ("fw", "bw")}
    assert json.loads(index.read_text())["videos"][0]["labelled_pairs"] == 3


def test_fused_labels_equal_the_teacher_store_verified(frames, tmp_path, keep_torch_threads):
    for name, teacher in (("budget", TEACHER), ("all", TeacherSettings(scales=(2.0,), iters=3, flip=True))):
        flow_stage(frames, str(tmp_path / f"teacher_{name}.zarr"), str(WEIGHTS), batch_size=2, threads=1,
                   device="cpu", progress=False, teacher=teacher)
        computed = np.asarray(open_group(tmp_path / f"teacher_{name}.zarr")["pair_computed"][:])
        assert computed.sum() == len(teacher.select_pairs(7, 48, 64))
        make_flow_labels(frames, str(tmp_path / f"teacher_{name}.zarr"), str(tmp_path / f"two_{name}.zarr"),
                         batch_size=2, **VERIFY)
        make_teacher_labels(frames, str(tmp_path / f"fused_{name}.zarr"), str(WEIGHTS), teacher, batch_size=2,
                            threads=1, device="cpu", **VERIFY, flow_out=str(tmp_path / f"fused_flow_{name}.zarr"))
        # The flow store the labels job writes beside its labels is the flow stage's, byte for byte.
        fa, fb = open_group(tmp_path / f"teacher_{name}.zarr"), open_group(tmp_path / f"fused_flow_{name}.zarr")
        for k in ("flow_fw", "flow_bw", "pair_finite", "pair_computed"):
            assert fa[k][...].tobytes() == fb[k][...].tobytes(), f"{name}: flow store {k} differs"
        assert fa.attrs["teacher"] == fb.attrs["teacher"] and fb.attrs["computed_pairs"] == computed.sum()
        a, b = open_group(tmp_path / f"two_{name}.zarr"), open_group(tmp_path / f"fused_{name}.zarr")
        names = sorted(k for k, _ in a.arrays())
        assert names == sorted(k for k, _ in b.arrays()) and "labelled" in names
        for k in names:
            x, y = a[k][...], b[k][...]
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), f"{name}: {k} differs"
        assert a.attrs["label_budget"] == b.attrs["label_budget"]
