"""User query points: source frames and pixels to the frames store's, and tracking them both ways in time."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import ROOT, SHARED, require_asset
from motionrefine.core.errors import MotionRefineError
from motionrefine.track.queries import (grid_of_size, read_queries, to_source_pixels, to_stored_pixels,
                                        track_queries)

RAFT = SHARED / "weights/raft-small.pth"
CHECKPOINT = ROOT / "weights/flowpips-small-synth.pth"
# As io.video.extract_frames writes them: tree.avi (320x240), source frames 10, 12, ..., 18 at 96x64.
ATTRS = {"frame_indices": [10, 12, 14, 16, 18], "original_size": {"width": 320, "height": 240},
         "stored_size": {"width": 96, "height": 64}}


def write(tmp_path, text: str, name: str = "q.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_source_frames_and_pixels_map_to_the_store(tmp_path):
    q = read_queries(write(tmp_path, "frame,x,y\n14,159.5,119.5\n10,100,50\n18,3.25,200\n"), ATTRS)
    assert q.dtype == np.float32 and q.shape == (3, 3)
    np.testing.assert_array_equal(q[:, 0], [2, 0, 4])
    # the frame's centre is the frame's centre at any size (pixel centres at integers)
    np.testing.assert_allclose(q[0, 1:], [47.5, 31.5], atol=1e-5)
    np.testing.assert_allclose(q[1, 1:], [(100.5 * 0.3) - 0.5, (50.5 * 64 / 240) - 0.5], atol=1e-5)
    # and back: source -> stored -> source is the identity
    np.testing.assert_allclose(to_source_pixels(q[:, 1:], ATTRS), [[159.5, 119.5], [100, 50], [3.25, 200]],
                               atol=1e-4)


def test_header_is_optional_and_may_reorder_columns(tmp_path):
    plain = read_queries(write(tmp_path, "12,10,20\n\n16,30.5,40\n", "a.csv"), ATTRS)
    # a spreadsheet export: byte-order mark, other column order, spaces, CRLF
    sheet = write(tmp_path, "", "b.csv")
    sheet.write_bytes("\ufeffX, Y ,Frame\r\n10,20,12\r\n30.5,40,16\r\n".encode("utf-8"))
    np.testing.assert_array_equal(plain, read_queries(sheet, ATTRS))
    np.testing.assert_array_equal(plain[:, 0], [1, 3])


def test_scaling_matches_how_frames_and_flow_are_resized():
    # A ramp image I(x) = x resized as io.video resizes (INTER_AREA down, INTER_LINEAR up): the
    # stored pixel at x_stored shows the source position to_source_pixels(x_stored).
    ramp = np.tile(np.arange(320, dtype=np.float32), (240, 1))
    for (w, h), interp in (((80, 60), cv2.INTER_AREA), ((640, 480), cv2.INTER_LINEAR)):
        attrs = {"original_size": {"width": 320, "height": 240}, "stored_size": {"width": w, "height": h}}
        small = cv2.resize(ramp, (w, h), interpolation=interp)
        xs = np.arange(4, w - 4)  # away from the border, where resizing clamps
        src = to_source_pixels(np.stack([xs, np.zeros_like(xs)], 1), attrs)[:, 0]
        np.testing.assert_allclose(small[h // 2, 4:w - 4], src, atol=1e-3)
        np.testing.assert_allclose(to_stored_pixels(src[:, None].repeat(2, 1), attrs)[:, 0], xs, atol=1e-4)
    # a flow vector u between two stored points is u x (W_src / W_stored) between their source points
    p, u = np.array([[10.0, 20.0]]), np.array([[3.0, -2.0]])
    d = to_source_pixels(p + u, ATTRS) - to_source_pixels(p, ATTRS)
    np.testing.assert_allclose(d, u * [320 / 96, 240 / 64], atol=1e-4)


def test_a_border_query_is_clamped_into_the_stored_frame(tmp_path):
    q = read_queries(write(tmp_path, "frame,x,y\n10,0,0\n10,319,239\n"), ATTRS)
    # raw mapping would be (-0.35, -0.37) and (95.35, 63.37): half a source pixel past the stored centres
    np.testing.assert_allclose(q[:, 1:], [[0, 0], [95, 63]], atol=1e-6)


@pytest.mark.parametrize("text, needle", [
    ("frame,x,y\n10,1,1\n13,5,5\n", "line 3: source frame 13 is not in the frames store"),
    ("frame,x,y\n10,1,1\n10,abc,5\n", "line 3: x 'abc' is not a number"),
    ("10,1,1\n10,,5\n", "line 2: x '' is not a number"),
    ("10,1,1\n10,nan,5\n", "line 2: x 'nan' is not a finite number"),
    ("frame,x,y\n10,5\n", "line 2: 2 column(s)"),
    ("frame,x\n10,5\n", "line 1: header"),
    ("t,x,y\n10,5,5\n", "line 1: header"),
    ("frame,x,y\n10,320,5\n", "line 2: point (320, 5) is outside the 320x240 source frame"),
    ("frame,x,y\n10,5,-1\n", "line 2: point (5, -1) is outside"),
    ("frame,x,y\n12.5,5,5\n", "line 2: frame '12.5' is not a whole frame index"),
    ("frame,x,y\n", "no query points"),
    ("\n\n", "no query points"),
])
def test_bad_query_csv_names_file_and_line(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(MotionRefineError) as err:
        read_queries(path, ATTRS)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_unstored_frame_names_the_nearest_stored_frames(tmp_path):
    with pytest.raises(MotionRefineError, match=r"nearest stored: 12 and 14"):
        read_queries(write(tmp_path, "13,5,5\n"), ATTRS)
    with pytest.raises(MotionRefineError, match=r"nearest stored: 18$"):
        read_queries(write(tmp_path, "40,5,5\n"), ATTRS)


def test_missing_file_or_attrs_is_one_clear_error(tmp_path):
    with pytest.raises(MotionRefineError, match="query CSV not found"):
        read_queries(tmp_path / "none.csv", ATTRS)
    with pytest.raises(MotionRefineError, match="no original_size"):
        read_queries(write(tmp_path, "10,1,1\n"), {k: v for k, v in ATTRS.items() if k != "original_size"})


def test_grid_of_size_is_evenly_spaced_inside_the_frame():
    q = grid_of_size(64, 96, 3)
    assert q.shape == (9, 3) and (q[:, 0] == 0).all()
    np.testing.assert_allclose(np.unique(q[:, 1]), [15.5, 47.5, 79.5])  # cell centres, 32 px apart
    np.testing.assert_allclose(np.unique(q[:, 2]), [(64 / 6) - 0.5, 31.5, (64 * 5 / 6) - 0.5], atol=1e-5)
    for bad in (0, 2.5, True):
        with pytest.raises(MotionRefineError, match="grid_size"):
            grid_of_size(64, 96, bad)


@pytest.fixture(scope="module")
def tree_frames(tmp_path_factory):
    from motionrefine.io.video import extract_frames

    root = tmp_path_factory.mktemp("queries")
    attrs = extract_frames(require_asset(SHARED / "data/videos/tree.avi"), root / "tree.zarr", start=10, end=20,
                           stride=2, resize="96x64")
    assert attrs["frame_indices"] == ATTRS["frame_indices"]
    return root / "tree.zarr"


def run(frames, out, **kw):
    return track_queries(frames, require_asset(CHECKPOINT), out, raft_checkpoint=require_asset(RAFT),
                         device="cpu", **kw)


def test_a_middle_frame_query_is_tracked_both_ways(tree_frames, tmp_path):
    from motionrefine.core.store import open_group
    from motionrefine.io.track_formats import export_track_store

    csv = write(tmp_path, "frame,x,y\n14,160,120\n10,100,80\n")
    assert run(tree_frames, tmp_path / "t.zarr", queries=csv) == 2
    g = open_group(tmp_path / "t.zarr")
    tracks, visible, queries = g["tracks"][...], g["visible"][...], g["queries"][...]
    assert tracks.shape == (2, 5, 2) and visible.shape == (2, 5) and np.isfinite(tracks).all()
    np.testing.assert_array_equal(queries, read_queries(csv, dict(open_group(tree_frames).attrs)))
    # exactly its own position at its frame (stored frame 2), tracked before and after it
    np.testing.assert_array_equal(tracks[0, 2], queries[0, 1:])
    assert visible[0, 2] and visible[1, 0]
    assert g.attrs["query_source"] == "csv" and g.attrs["queries_csv"] == str(csv)
    assert g.attrs["kind"] == "track_predictions" and g.attrs["model_size"] == "flow-small"
    assert export_track_store(tmp_path / "t.zarr", tree_frames, tmp_path / "t.csv", "csv", "tree") == 2


def test_tracks_before_and_after_the_query_frame_follow_the_motion(tree_frames, tmp_path):
    # tree.avi barely moves over a few frames: slide a crop of one of its frames by v px per frame
    from motionrefine.core.store import atomic_group, open_group, write_array

    image = open_group(tree_frames)["frames"][0]
    image = cv2.resize(image, (320, 240), interpolation=cv2.INTER_LINEAR)
    v = np.array([3.0, -1.5])
    frames = np.stack([cv2.warpAffine(image, np.float32([[1, 0, v[0] * t - 100], [0, 1, v[1] * t - 80]]), (96, 64),
                                      flags=cv2.INTER_LINEAR) for t in range(5)])
    with atomic_group(tmp_path / "moving.zarr") as g:
        write_array(g, "frames", frames)
    q = np.array([[2, 48, 32], [2, 30, 40], [4, 60, 20]], np.float32)
    run(tmp_path / "moving.zarr", tmp_path / "m.zarr", queries=q)
    tracks = open_group(tmp_path / "m.zarr")["tracks"][...]
    expected = q[:, None, 1:] + v * (np.arange(5)[None, :, None] - q[:, None, :1])
    np.testing.assert_allclose(tracks, expected, atol=1.0)  # 3 px/frame: a frozen or one-way track fails
    np.testing.assert_array_equal(tracks[[0, 1, 2], [2, 2, 4]], q[:, 1:])


@pytest.mark.parametrize("grid_size", [None, 2])
def test_grids_at_frame_zero(tree_frames, tmp_path, grid_size):
    from motionrefine.core.store import open_group
    from motionrefine.track.predict import frame0_grid

    n = run(tree_frames, tmp_path / "g.zarr", grid_size=grid_size)
    g = open_group(tmp_path / "g.zarr")
    expected = frame0_grid(64, 96)[0] if grid_size is None else grid_of_size(64, 96, 2)
    np.testing.assert_array_equal(g["queries"][...], expected)
    assert n == len(expected) and g["tracks"].shape == (n, 5, 2) and g["visible"][:, 0].all()
    assert g.attrs["query_source"] == "grid" and g.attrs["grid_size"] == grid_size
    assert (g.attrs["grid_spacing"] is None) == (grid_size is not None)


def test_stored_query_arrays_are_checked(tree_frames, tmp_path):
    with pytest.raises(MotionRefineError, match="not both"):
        run(tree_frames, tmp_path / "x.zarr", queries=np.zeros((1, 3)), grid_size=2)
    with pytest.raises(MotionRefineError, match=r"query 1 .* not a stored frame"):
        run(tree_frames, tmp_path / "x.zarr", queries=np.array([[0, 5, 5], [5, 5, 5]]))
    assert not (tmp_path / "x.zarr").exists()


def test_pips_sizes_track_a_middle_frame_query_both_ways_too(tree_frames, tmp_path):
    # the PIPs path (track_long, forward then on the reversed video); an untrained small PIPs
    import torch

    from motionrefine.core.store import open_group
    from motionrefine.models.pips import Pips, save_pips

    torch.manual_seed(0)
    save_pips(Pips("small"), tmp_path / "pips.pth")
    q = np.array([[2, 40, 30]], np.float32)
    track_queries(tree_frames, tmp_path / "pips.pth", tmp_path / "p.zarr", queries=q, size="small", iters=1,
                  device="cpu")
    g = open_group(tmp_path / "p.zarr")
    tracks, visible = g["tracks"][...], g["visible"][...]
    assert np.isfinite(tracks).all() and visible[0, 2] and g.attrs["model_size"] == "small"
    np.testing.assert_array_equal(tracks[0, 2], q[0, 1:])
