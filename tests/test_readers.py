"""Benchmark readers and flow file formats.

Synthetic fixtures are written in tmp_path byte-for-byte in the published formats
(not through the writers under test where that would make the test circular); the
real fixtures are read in place from ../shared.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import SHARED, require_asset
from motionrefine.io import flow_formats as flowio
from motionrefine.io import readers
from motionrefine.core.errors import AssetMissingError, MotionRefineError
from motionrefine.core.geometry import backward_warp, inside_frame

FIXTURES = SHARED / "data" / "fixtures" / "flow"
MOTORCYCLE = SHARED / "data" / "stereo" / "motorcycle"


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), img)


def _flo_bytes(flow: np.ndarray) -> bytes:
    """A .flo file assembled by hand from the format description."""
    h, w, _ = flow.shape
    return struct.pack("<fii", 202021.25, w, h) + flow.astype("<f4").tobytes()


def _write_flo_raw(path: Path, flow: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_flo_bytes(flow))


def _kitti_png(path: Path, flow: np.ndarray, valid: np.ndarray) -> None:
    """KITTI flow PNG by hand: RGB = (u, v, valid) = cv2 BGR (valid, v, u), value = x*64 + 2^15."""
    path.parent.mkdir(parents=True, exist_ok=True)
    enc = (flow * 64.0 + 2**15).astype(np.uint16)
    bgr = np.stack([valid.astype(np.uint16), enc[..., 1], enc[..., 0]], axis=-1)
    assert cv2.imwrite(str(path), bgr)


def _rng_frames(rng, t, h, w):
    return rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- .flo


def test_flo_layout_is_row_major_uv_interleaved(tmp_path):
    data = np.arange(12, dtype=np.float32).reshape(2, 3, 2)  # H=2, W=3
    p = tmp_path / "a.flo"
    _write_flo_raw(p, data)
    flow = flowio.read_flo(p)
    assert flow.shape == (2, 3, 2) and flow.dtype == np.float32
    # Pixel (row 1, col 2) is the 6th (u, v) pair in the file: values 10, 11.
    assert flow[1, 2, 0] == 10 and flow[1, 2, 1] == 11
    np.testing.assert_array_equal(flow, data)


def test_real_flo_fixture_and_byte_exact_round_trip(tmp_path):
    src = require_asset(FIXTURES / "00001_flow.flo")
    flow = flowio.read_flo(src)
    assert flow.shape == (50, 50, 2)
    assert np.isfinite(flow).all() and np.abs(flow).max() > 0.1
    out = tmp_path / "copy.flo"
    flowio.write_flo(out, flow)
    assert out.read_bytes() == src.read_bytes()
    np.testing.assert_array_equal(flowio.read_flo(out), flow)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temporary behind


def test_flo_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad_magic.flo"
    bad.write_bytes(struct.pack("<fii", 1.0, 2, 2) + bytes(32))
    with pytest.raises(MotionRefineError, match="bad_magic.flo.*magic"):
        flowio.read_flo(bad)
    short = tmp_path / "short.flo"
    short.write_bytes(struct.pack("<fii", 202021.25, 3, 2) + bytes(40))  # needs 48
    with pytest.raises(MotionRefineError, match="short.flo.*3x2"):
        flowio.read_flo(short)
    with pytest.raises(AssetMissingError, match="nope.flo"):
        flowio.read_flo(tmp_path / "nope.flo")


# --------------------------------------------------------------------------- KITTI PNG, PFM, npy


def test_kitti_png_read_handmade_and_round_trip(tmp_path):
    flow = np.array([[[1.5, -2.25], [0.0, 0.0]], [[-100.0, 37.015625], [3.0, 4.0]]], np.float32)
    valid = np.array([[True, False], [True, True]])
    p = tmp_path / "000000_10.png"
    _kitti_png(p, flow, valid)
    got, got_valid = flowio.read_kitti_flow(p)
    np.testing.assert_array_equal(got_valid, valid)
    np.testing.assert_array_equal(got[valid], flow[valid])
    assert (got[~valid] == 0).all()

    q = tmp_path / "written.png"
    flowio.write_kitti_flow(q, flow, valid)
    raw = cv2.imread(str(q), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    assert raw[1, 0, 2] == 2**15 - 6400 and raw[1, 0, 1] == 2**15 + 2369 and raw[1, 0, 0] == 1  # (u, v, valid)
    got2, valid2 = flowio.read_kitti_flow(q)
    np.testing.assert_array_equal(valid2, valid)
    np.testing.assert_array_equal(got2[valid], flow[valid])


def test_kitti_png_rejects_8bit(tmp_path):
    p = tmp_path / "eight.png"
    cv2.imwrite(str(p), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(MotionRefineError, match="eight.png.*16-bit"):
        flowio.read_kitti_flow(p)


def test_pfm_handmade_little_and_big_endian(tmp_path):
    # Rows are stored bottom to top: bottom row (3, 4) first.
    little = tmp_path / "l.pfm"
    little.write_bytes(b"Pf\n2 2\n-1.0\n" + np.array([3, 4, 1, 2], "<f4").tobytes())
    np.testing.assert_array_equal(flowio.read_pfm(little), [[1, 2], [3, 4]])
    big = tmp_path / "b.pfm"
    big.write_bytes(b"Pf\n2 1\n1.0\n" + np.array([5, np.inf], ">f4").tobytes())
    np.testing.assert_array_equal(flowio.read_pfm(big), [[5, np.inf]])
    bad = tmp_path / "bad.pfm"
    bad.write_bytes(b"P6\n2 2\n255\n" + bytes(12))
    with pytest.raises(MotionRefineError, match="bad.pfm"):
        flowio.read_pfm(bad)
    rgb = np.random.default_rng(0).normal(size=(3, 4, 3)).astype(np.float32)
    flowio.write_pfm(tmp_path / "rt.pfm", rgb)
    np.testing.assert_array_equal(flowio.read_pfm(tmp_path / "rt.pfm"), rgb)


def test_read_write_flow_dispatch_and_npy(tmp_path):
    flow = np.random.default_rng(1).normal(size=(5, 7, 2)).astype(np.float32) * 10
    valid = np.ones((5, 7), bool)
    valid[2, 3] = False
    for ext in (".flo", ".npy"):
        p = tmp_path / f"f{ext}"
        flowio.write_flow(p, flow, valid)
        got, got_valid = flowio.read_flow(p)
        np.testing.assert_array_equal(got_valid, valid)
        np.testing.assert_array_equal(got[valid], flow[valid])
        assert (got[2, 3] == 0).all()
    flowio.write_npy(tmp_path / "plain.npy", flow)
    np.testing.assert_array_equal(np.load(tmp_path / "plain.npy"), flow)
    with pytest.raises(MotionRefineError, match=r"\.xyz"):
        flowio.read_flow(tmp_path / "f.xyz")


# --------------------------------------------------------------------------- Sintel


def _make_sintel(root: Path, rng, scenes=("alley_1", "bamboo_2"), t=3, h=6, w=8):
    truth = {}
    for s in scenes:
        frames = _rng_frames(rng, t, h, w)
        flows = rng.normal(size=(t - 1, h, w, 2)).astype(np.float32)
        occ = rng.random((t - 1, h, w)) < 0.3
        for i in range(t):
            _write_rgb(root / "training" / "clean" / s / f"frame_{i + 1:04d}.png", frames[i])
            _write_rgb(root / "training" / "final" / s / f"frame_{i + 1:04d}.png", 255 - frames[i])
        for i in range(t - 1):
            _write_flo_raw(root / "training" / "flow" / s / f"frame_{i + 1:04d}.flo", flows[i])
            _write_rgb(root / "training" / "occlusions" / s / f"frame_{i + 1:04d}.png", occ[i].astype(np.uint8) * 255)
        truth[s] = (frames, flows, occ)
    return truth


def test_sintel_reader(tmp_path):
    truth = _make_sintel(tmp_path, np.random.default_rng(2))
    scenes = list(readers.read_sintel(tmp_path, split="clean"))
    assert [s.name for s in scenes] == ["alley_1", "bamboo_2"]
    for sc in scenes:
        frames, flows, occ = truth[sc.name]
        assert sc.frames.shape == (3, 6, 8, 3) and sc.frames.dtype == np.uint8
        np.testing.assert_array_equal(sc.frames, frames)  # RGB order preserved
        np.testing.assert_array_equal(sc.flow, flows)
        assert sc.valid.all()
        np.testing.assert_array_equal(sc.occluded, occ)

    final = list(readers.read_sintel(tmp_path / "training", split="final", scenes="bamboo_2", max_frames=2))
    assert len(final) == 1 and final[0].frames.shape[0] == 2 and final[0].flow.shape[0] == 1
    np.testing.assert_array_equal(final[0].frames[0], 255 - truth["bamboo_2"][0][0])

    with pytest.raises(MotionRefineError, match="not found.*nosuch"):
        list(readers.read_sintel(tmp_path, scenes=["nosuch"]))
    with pytest.raises(MotionRefineError, match="split"):
        list(readers.read_sintel(tmp_path, split="albedo"))
    (tmp_path / "training" / "flow" / "alley_1" / "frame_0002.flo").unlink()
    with pytest.raises(AssetMissingError, match="frame_0002.flo"):
        list(readers.read_sintel(tmp_path, split="clean", scenes=["alley_1"]))


def test_sintel_layout_on_real_flyingthings_fixture(tmp_path):
    """The real FlyingThings crop, linked (not copied) into a Sintel layout."""
    require_asset(FIXTURES / "0000000-img_0.png")
    tr = tmp_path / "training"
    links = {
        tr / "clean" / "things" / "frame_0001.png": FIXTURES / "0000000-img_0.png",
        tr / "clean" / "things" / "frame_0002.png": FIXTURES / "0000000-img_1.png",
        tr / "flow" / "things" / "frame_0001.flo": FIXTURES / "0000000-flow_01.flo",
        tr / "occlusions" / "things" / "frame_0001.png": FIXTURES / "0000000-occ_01.png",
    }
    for dst, src in links.items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src)
    (sc,) = readers.read_sintel(tmp_path, split="clean")
    assert sc.frames.shape == (2, 50, 50, 3) and sc.flow.shape == (1, 50, 50, 2)
    assert np.isfinite(sc.flow).all() and sc.valid.all()
    np.testing.assert_array_equal(sc.flow[0], flowio.read_flo(FIXTURES / "0000000-flow_01.flo"))
    # The occlusion PNG is 3-channel 0/255; 3.5 % of the crop is occluded.
    assert sc.occluded.dtype == bool and 0.02 < sc.occluded.mean() < 0.05


def test_real_chairs_flow_warps_frame2_onto_frame1():
    """FlyingChairs crop: backward-warping frame 2 with the .flo read must reproduce
    frame 1 far better than no motion, negated or u/v-swapped flow (checks order and sign)."""
    require_asset(FIXTURES / "00001_flow.flo")
    img1 = readers.read_rgb(FIXTURES / "00001_img1.ppm")
    img2 = readers.read_rgb(FIXTURES / "00001_img2.ppm")
    flow, valid = flowio.read_flow(FIXTURES / "00001_flow.flo")
    assert valid.all()

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()

    def err(f):
        f = t(f)
        keep = inside_frame(f)[0].numpy()  # zero padding outside the frame is not evidence
        return (backward_warp(t(img2), f) - t(img1)).abs().mean(1)[0].numpy()[keep].mean()

    e = err(flow)
    assert e < 0.6 * err(np.zeros_like(flow))
    assert e < 0.5 * err(-flow) and e < 0.5 * err(flow[..., ::-1])


# --------------------------------------------------------------------------- KITTI


def test_kitti2015_reader(tmp_path):
    rng = np.random.default_rng(3)
    tr = tmp_path / "training"
    truth = {}
    for name in ("000000", "000001"):
        frames = _rng_frames(rng, 2, 5, 9)
        flow = np.round(rng.normal(size=(5, 9, 2)) * 640) / 64  # exactly representable
        valid_occ = rng.random((5, 9)) < 0.8
        valid_noc = valid_occ & (rng.random((5, 9)) < 0.7)
        _write_rgb(tr / "image_2" / f"{name}_10.png", frames[0])
        _write_rgb(tr / "image_2" / f"{name}_11.png", frames[1])
        _kitti_png(tr / "flow_occ" / f"{name}_10.png", flow, valid_occ)
        _kitti_png(tr / "flow_noc" / f"{name}_10.png", flow, valid_noc)
        truth[name] = (frames, flow, valid_occ, valid_noc)

    occ_scenes = list(readers.read_kitti2015(tmp_path, mode="occ"))
    assert [s.name for s in occ_scenes] == ["000000", "000001"]
    for sc in occ_scenes:
        frames, flow, v_occ, v_noc = truth[sc.name]
        np.testing.assert_array_equal(sc.frames, frames)
        np.testing.assert_array_equal(sc.valid[0], v_occ)
        np.testing.assert_array_equal(sc.flow[0][v_occ], flow[v_occ])
        np.testing.assert_array_equal(sc.occluded[0], v_occ & ~v_noc)
    (noc,) = readers.read_kitti2015(tr, mode="noc", scenes=["000001"])
    np.testing.assert_array_equal(noc.valid[0], truth["000001"][3])
    np.testing.assert_array_equal(noc.occluded[0], truth["000001"][2] & ~truth["000001"][3])
    with pytest.raises(MotionRefineError, match="mode"):
        list(readers.read_kitti2015(tmp_path, mode="all"))


# --------------------------------------------------------------------------- Middlebury


def test_middlebury_motorcycle_stereo_as_flow():
    require_asset(MOTORCYCLE / "motorcycle_disp.npz")
    (sc,) = readers.read_middlebury_stereo(MOTORCYCLE)
    assert sc.name == "motorcycle"
    assert sc.frames.shape == (2, 500, 741, 3) and sc.flow.shape == (1, 500, 741, 2)
    d = np.load(MOTORCYCLE / "motorcycle_disp.npz")["arr_0"]
    finite = np.isfinite(d)
    np.testing.assert_array_equal(sc.valid[0], finite)
    assert 0.85 < sc.valid.mean() < 0.98  # Middlebury GT misses only occlusions/unmatched pixels
    np.testing.assert_array_equal(sc.flow[0, ..., 0][finite], -d[finite])
    assert (sc.flow[0, ..., 1] == 0).all() and (sc.flow[0][~finite] == 0).all()
    assert sc.flow[0, ..., 0][finite].max() < 0  # right view: content moves left


def test_middlebury_2014_pfm_layout(tmp_path):
    rng = np.random.default_rng(4)
    left, right = _rng_frames(rng, 2, 4, 6)
    d = rng.uniform(1, 20, size=(4, 6)).astype(np.float32)
    d[0, 0] = np.inf
    scene = tmp_path / "Piano-perfect"
    _write_rgb(scene / "im0.png", left)
    _write_rgb(scene / "im1.png", right)
    # disp0.pfm by hand: Pf, little-endian, bottom row first.
    (scene / "disp0.pfm").write_bytes(b"Pf\n6 4\n-1.0\n" + np.flipud(d).astype("<f4").tobytes())
    (sc,) = readers.read_middlebury_stereo(tmp_path)
    assert sc.name == "Piano-perfect"
    np.testing.assert_array_equal(sc.frames[0], left)
    assert not sc.valid[0, 0, 0] and sc.valid.sum() == 23
    np.testing.assert_array_equal(sc.flow[0, 1:, :, 0], -d[1:])
    sc2 = readers.read_middlebury_stereo_pair(scene / "im0.png", scene / "im1.png", scene / "disp0.pfm")
    np.testing.assert_array_equal(sc2.flow, sc.flow)


@pytest.mark.parametrize("split_layout", [True, False])
def test_middlebury_flow(tmp_path, split_layout):
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, (2, 5, 7), dtype=np.uint8)
    flow = rng.normal(size=(5, 7, 2)).astype(np.float32)
    flow[1, 2] = 1e10  # Middlebury's "unknown"
    img_dir = tmp_path / ("other-gray-twoframes" if split_layout else "") / "Dimetrodon"
    gt_dir = tmp_path / ("other-gt-flow" if split_layout else "") / "Dimetrodon"
    _write_rgb(img_dir / "frame10.png", grey[0])
    _write_rgb(img_dir / "frame11.png", grey[1])
    _write_flo_raw(gt_dir / "flow10.flo", flow)
    (sc,) = readers.read_middlebury_flow(tmp_path)
    assert sc.name == "Dimetrodon" and sc.frames.shape == (2, 5, 7, 3)
    np.testing.assert_array_equal(sc.frames[1, ..., 2], grey[1])
    assert not sc.valid[0, 1, 2] and sc.valid.sum() == 34
    assert (sc.flow[0, 1, 2] == 0).all()
    np.testing.assert_array_equal(sc.flow[0][sc.valid[0]], flow[sc.valid[0]])


# --------------------------------------------------------------------------- TAP-Vid


def _tapvid_example(rng, t=4, h=20, w=30):
    points = np.array([
        [[0.1, 0.2], [0.15, 0.25], [0.2, 0.3], [0.25, 0.35]],  # visible throughout
        [[0.5, 0.5], [0.5, 0.5], [0.6, 0.4], [0.7, 0.3]],      # first visible at frame 2
        [[0.9, 0.9]] * 4,                                       # never visible: dropped in "first"
    ], np.float32)
    occluded = np.array([[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]], bool)
    return {"video": _rng_frames(rng, t, h, w), "points": points, "occluded": occluded}


def test_tapvid_davis_first_query_and_resize(tmp_path):
    rng = np.random.default_rng(6)
    data = {"bear": _tapvid_example(rng), "camel": _tapvid_example(rng)}
    pkl = tmp_path / "tapvid_davis.pkl"
    pkl.write_bytes(pickle.dumps(data))

    scenes = list(readers.read_tapvid(pkl))
    assert [s.name for s in scenes] == ["bear", "camel"]
    sc = scenes[0]
    assert sc.frames.shape == (4, 256, 256, 3) and sc.frames.dtype == np.uint8
    assert sc.query_mode == "first"
    pts = data["bear"]["points"]
    # TAP-Vid convention: pixel = normalised * [width, height] of the resized frames.
    np.testing.assert_allclose(sc.tracks, pts[:2] * 256, rtol=1e-6)
    np.testing.assert_array_equal(sc.query_frame, [0, 2])
    np.testing.assert_array_equal(sc.meta["track_index"], [0, 1])
    np.testing.assert_allclose(sc.query_xy, [[0.1 * 256, 0.2 * 256], [0.6 * 256, 0.4 * 256]], rtol=1e-6)
    np.testing.assert_allclose(sc.query_points[1], [2, 0.6 * 256, 0.4 * 256], rtol=1e-6)

    (small,) = readers.read_tapvid(pkl, resolution=(10, 15), videos=["camel"], pixel_convention="centre")
    assert small.frames.shape == (4, 10, 15, 3)
    pts = data["camel"]["points"][:2]
    np.testing.assert_allclose(small.tracks[..., 0], pts[..., 0] * 15 - 0.5, rtol=1e-6)
    np.testing.assert_allclose(small.tracks[..., 1], pts[..., 1] * 10 - 0.5, rtol=1e-6)
    (native,) = readers.read_tapvid(pkl, resolution=None, videos=["bear"])
    np.testing.assert_array_equal(native.frames, data["bear"]["video"])
    with pytest.raises(MotionRefineError, match="not found.*zebra"):
        list(readers.read_tapvid(pkl, videos=["zebra"]))


def test_tapvid_strided_queries(tmp_path):
    rng = np.random.default_rng(7)
    occluded = np.array([[0] * 7, [1, 1, 1, 1, 1, 0, 0], [1] * 7], bool)
    ex = {"video": _rng_frames(rng, 7, 12, 12), "points": np.full((3, 7, 2), 0.5, np.float32), "occluded": occluded}
    pkl = tmp_path / "d.pkl"
    pkl.write_bytes(pickle.dumps({"v": ex}))
    (sc,) = readers.read_tapvid(pkl, query_mode="strided", resolution=(8, 8))
    # Query frames 0 and 5 (stride 5): track 0 visible at both, track 1 only at 5, track 2 never.
    np.testing.assert_array_equal(sc.query_frame, [0, 5, 5])
    np.testing.assert_array_equal(sc.meta["track_index"], [0, 0, 1])
    assert sc.query_mode == "strided" and not sc.occluded[np.arange(3), sc.query_frame].any()
    (sc2,) = readers.read_tapvid(pkl, query_mode="strided", resolution=(8, 8), query_stride=2)
    np.testing.assert_array_equal(sc2.query_frame, [0, 2, 4, 6, 6])


def test_tapvid_kinetics_jpeg_shards(tmp_path):
    red = np.zeros((4, 16, 24, 3), np.uint8)
    red[..., 0] = 200
    red[..., 1] = 30
    jpegs = [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes() for f in red]
    ex = {"video": jpegs, "points": _tapvid_example(np.random.default_rng(8))["points"],
          "occluded": _tapvid_example(np.random.default_rng(8))["occluded"]}
    for shard in ("0000_of_0010", "0001_of_0010"):
        (tmp_path / f"{shard}.pkl").write_bytes(pickle.dumps([ex, ex]))
    scenes = list(readers.read_tapvid(tmp_path, resolution=(8, 8)))
    assert [s.name for s in scenes] == ["0000_of_0010_0000", "0000_of_0010_0001",
                                        "0001_of_0010_0000", "0001_of_0010_0001"]
    f = scenes[0].frames.astype(int)
    assert f.shape == (4, 8, 8, 3)
    assert abs(f[..., 0].mean() - 200) < 4 and abs(f[..., 1].mean() - 30) < 4 and f[..., 2].mean() < 6

    junk = tmp_path / "junk" / "x.pkl"
    junk.parent.mkdir()
    junk.write_bytes(b"not a pickle")
    with pytest.raises(MotionRefineError, match="x.pkl"):
        list(readers.read_tapvid(junk))


# --------------------------------------------------------------------------- interface


def test_scene_validation_and_registry(tmp_path):
    frames = np.zeros((2, 3, 4, 3), np.uint8)
    with pytest.raises(MotionRefineError, match="flow shape"):
        readers.FlowScene("x", frames, np.zeros((2, 3, 4, 2), np.float32), np.ones((1, 3, 4), bool))
    with pytest.raises(MotionRefineError, match="query frame"):
        readers.TrackScene("y", frames, np.zeros((1, 2, 2), np.float32), np.zeros((1, 2), bool), np.array([2]))
    with pytest.raises(MotionRefineError, match="unknown benchmark"):
        readers.iter_benchmark("hd1k", tmp_path)
    _make_sintel(tmp_path, np.random.default_rng(9), scenes=("market_2",), t=2)
    (sc,) = readers.iter_benchmark("sintel", tmp_path, split="clean")
    assert sc.name == "market_2"
