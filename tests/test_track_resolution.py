"""tracking.max_pixels: the tracker works on downscaled frames above it; labels record the size
they were made at, and delivered tracks come back in stored pixels."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import ROOT, SHARED, require_asset
from motionrefine.core.store import atomic_group, open_group, write_array
from motionrefine.track.resolution import from_size, to_size, tracking_size

RAFT = SHARED / "weights/raft-small.pth"
CHECKPOINT = ROOT / "weights/flowpips-small-synth.pth"


def test_tracking_size_caps_pixels_and_keeps_the_aspect():
    h, w = tracking_size(540, 960, 256 * 448)
    assert h * w <= 256 * 448 and h * w > 0.98 * 256 * 448
    assert abs(w / h - 960 / 540) < 0.01
    assert tracking_size(144, 256, 256 * 448) == (144, 256)  # within the cap: as stored
    assert tracking_size(540, 960, None) == tracking_size(540, 960, 0) == (540, 960)
    assert min(tracking_size(60, 4000, 4096)) >= 57  # never below RAFT's minimum side


def test_points_map_to_the_working_size_and_back():
    stored, size = (64, 96), (32, 48)
    xy = np.array([[-0.5, -0.5], [95.5, 63.5], [10.0, 20.0]])
    small = to_size(xy, stored, size)
    np.testing.assert_allclose(small[:2], [[-0.5, -0.5], [47.5, 31.5]])  # frame edges map to frame edges
    np.testing.assert_allclose(from_size(small, stored, size), xy)


def _moving(frames: int, size: tuple[int, int], v) -> np.ndarray:
    """A crop of a real frame whose content moves by v px per frame (stored frames of ``size`` (h, w))."""
    img = cv2.imread(sorted((require_asset(SHARED / "data/frames/dog_run")).glob("*.jpg"))[0])[..., ::-1]
    h, w = size
    return np.stack([cv2.warpAffine(np.ascontiguousarray(img), np.float32([[1, 0, v[0] * t - 200], [0, 1, v[1] * t - 100]]),
                                    (w, h), flags=cv2.INTER_LINEAR) for t in range(frames)])


def test_capped_tracks_follow_the_motion_in_stored_pixels(tmp_path):
    from motionrefine.track.queries import track_queries

    v = np.array([4.0, -2.0])
    with atomic_group(tmp_path / "f.zarr") as g:
        write_array(g, "frames", _moving(5, (128, 192), v))
    q = np.array([[2, 96, 64], [0, 60, 80], [4, 120, 40]], np.float32)
    track_queries(tmp_path / "f.zarr", require_asset(CHECKPOINT), tmp_path / "t.zarr", queries=q,
                  raft_checkpoint=require_asset(RAFT), device="cpu", max_pixels=64 * 96)
    g = open_group(tmp_path / "t.zarr")
    assert g.attrs["tracking_size"] == [64, 96]
    tracks = g["tracks"][...]
    expected = q[:, None, 1:] + v * (np.arange(5)[None, :, None] - q[:, None, :1])
    # tracked at half size, so an error of 1 px there is 2 px here; a track left in working pixels is off by 50+
    np.testing.assert_allclose(tracks, expected, atol=2.0)
    np.testing.assert_array_equal(tracks[[0, 1, 2], [2, 0, 4]], q[:, 1:])


def test_labels_are_made_and_read_at_the_tracker_size(tmp_path):
    from motionrefine.track.samples import load_sample, load_track_samples
    from motionrefine.track.teachers import make_flowpips_labels

    v = np.array([3.0, 1.0])
    with atomic_group(tmp_path / "f.zarr") as g:
        write_array(g, "frames", _moving(8, (144, 224), v))
    make_flowpips_labels(tmp_path / "f.zarr", require_asset(CHECKPOINT), require_asset(RAFT), tmp_path / "l.zarr",
                         teachers=["tracker"], device="cpu", max_pixels=72 * 112, min_speed=0.0)
    lab = open_group(tmp_path / "l.zarr")
    assert (lab.attrs["height"], lab.attrs["width"]) == (72, 112)
    assert (lab.attrs["stored_height"], lab.attrs["stored_width"]) == (144, 224)
    tracks = lab["tracks"][...]
    assert len(tracks) and tracks[:, 0, 0].max() < 112 and tracks[:, 0, 1].max() < 72  # seeded in the small frame
    # content moves by v stored px per frame, v/2 at the labels' size
    step = np.median(np.diff(tracks, axis=1).reshape(-1, 2), axis=0)
    np.testing.assert_allclose(step, v / 2, atol=0.3)
    samples = load_track_samples([tmp_path / "l.zarr"], [tmp_path / "f.zarr"], 64, 1)
    assert samples and all(s.size == (72, 112) for s in samples)
    frames, _ = load_sample(samples[0], {})
    assert frames.shape == (8, 72, 112, 3)


def test_teacher_flow_is_resampled_to_the_tracker_size(tmp_path):
    from motionrefine.track.teachers import read_teacher_flow

    fw = np.zeros((2, 16, 24, 2), np.float32)
    fw[0] = [2.0, -1.0]
    with atomic_group(tmp_path / "flow.zarr") as g:
        write_array(g, "flow_fw", fw)
        write_array(g, "flow_bw", -fw)
        write_array(g, "pair_computed", np.array([True, False]))
    out = read_teacher_flow(tmp_path / "flow.zarr", 3, 16, 24, size=(8, 12))
    assert out["flow_fw"].shape == (2, 8, 12, 2)
    np.testing.assert_allclose(out["flow_fw"][0], np.broadcast_to([1.0, -0.5], (8, 12, 2)), atol=1e-6)
    np.testing.assert_allclose(out["flow_bw"][0], np.broadcast_to([-1.0, 0.5], (8, 12, 2)), atol=1e-6)
    assert not out["flow_fw"][1].any() and out["pair_computed"].tolist() == [True, False]
    with pytest.raises(Exception, match="flow_fw"):
        read_teacher_flow(tmp_path / "flow.zarr", 3, 8, 12)
