"""Real-texture benchmark generator: exact ground truth checked against the frames and
against an independent recomputation from the layer parameters.

Tolerances (64x96, T=4, photometric changes off, real frames from dog_run/hallway):
* warp residual |I_t(x) - I_{t+1}(x + F_fw(x))| on checked pixels: mean < 2/255,
  95th percentile < 8/255. Checked pixels: not occluded, and no alpha edge or layer
  boundary within 2 px of x in frame t or of x + F_fw(x) in frame t+1 (there the
  colour blends two surfaces whose relative motion differs, so no single flow can
  explain it).
* forward-backward: |F_fw(x) + F_bw(x + F_fw(x))| median < 0.05 px on the same pixels.
* tracks vs. an independent evaluation of A_t (u + D_t(u)): < 1e-3 px.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from motionrefine.bench import synth
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.geometry import backward_warp, inside_frame


def _load(frames_dir, idx: list[int]) -> list[np.ndarray]:
    files = sorted(frames_dir.glob("*.jpg"))
    # Same policy as conftest's `shared` fixture: missing assets are a setup error, not a skip.
    if len(files) <= max(idx):
        pytest.fail(f"shared frames missing: {frames_dir}/*.jpg needs at least {max(idx) + 1} files, "
                    f"found {len(files)} (clone the project with shared/ beside it)")
    out = []
    for i in idx:
        img = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
        if img is None:
            pytest.fail(f"unreadable shared frame {files[i]}")
        # Downscale once here: the generator would do it anyway, this keeps tests fast.
        scale = 160 / img.shape[1]
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(img[..., ::-1]))
    return out


@pytest.fixture(scope="module")
def sources(shared):
    frames = shared / "data" / "frames"
    return _load(frames / "dog_run", [0, 40]) + _load(frames / "hallway", [0, 5])


def small_cfg(preset="easy", **kw):
    base = dict(height=64, width=96, frames=4, layers=(2, 3), camera_motion=1.5, layer_speed=2.5,
                n_tracks=48, seed=0)
    base.update(kw)
    return synth.make_config(preset, **base)


# Scaled-down non-rigid settings for 64x96 (the named presets are meant for 256x448).
NONRIGID = dict(nonrigid_amplitude=3.0, nonrigid_sigma=10.0)


@pytest.fixture(scope="module")
def rigid_seq(sources):
    return synth.render_sequence(sources, small_cfg(seed=3, layers=3))


@pytest.fixture(scope="module")
def nonrigid_seq(sources):
    return synth.render_sequence(sources, small_cfg(seed=4, layers=3, **NONRIGID))


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).permute(2, 0, 1)[None]


def _near_boundary(seq, t: int, radius: int = 2) -> np.ndarray:
    """Pixels within ``radius`` of an alpha edge or a change of visible layer in frame t."""
    own = seq.owner[t]
    edge = seq.mixed[t].copy()
    edge[:, 1:] |= own[:, 1:] != own[:, :-1]
    edge[:, :-1] |= own[:, 1:] != own[:, :-1]
    edge[1:] |= own[1:] != own[:-1]
    edge[:-1] |= own[1:] != own[:-1]
    k = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(edge.astype(np.uint8), k).astype(bool)


def _checked_pixels(seq, t: int) -> np.ndarray:
    h, w = seq.owner.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w]
    tgt = np.stack([xs, ys], -1) + seq.flow_fw[t]
    ti = np.clip(np.rint(tgt).astype(int), 0, [w - 1, h - 1])
    far_t1 = ~_near_boundary(seq, t + 1)[ti[..., 1], ti[..., 0]]
    return ~seq.occ_fw[t] & ~_near_boundary(seq, t) & far_t1


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_scene_other_seed_differs(sources):
    a = synth.render_sequence(sources, small_cfg(seed=7, **NONRIGID))
    b = synth.render_sequence(sources, small_cfg(seed=7, **NONRIGID))
    c = synth.render_sequence(sources, small_cfg(seed=8, **NONRIGID))
    for name in ("frames", "flow_fw", "flow_bw", "occ_fw", "occ_bw", "tracks", "occluded", "query_frame", "query_xy"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert not np.array_equal(a.frames, c.frames)
    assert not np.array_equal(a.flow_fw, c.flow_fw)


def test_shapes_and_dtypes(rigid_seq):
    s = rigid_seq
    T, H, W = 4, 64, 96
    assert s.frames.shape == (T, H, W, 3) and s.frames.dtype == np.uint8
    assert s.flow_fw.shape == s.flow_bw.shape == (T - 1, H, W, 2) and s.flow_fw.dtype == np.float32
    assert s.occ_fw.shape == s.occ_bw.shape == (T - 1, H, W) and s.occ_fw.dtype == bool
    n = len(s.query_frame)
    assert n == 48
    assert s.tracks.shape == (n, T, 2) and s.tracks.dtype == np.float32
    assert s.occluded.shape == (n, T) and s.occluded.dtype == bool
    assert s.query_frame.dtype == np.int32 and s.query_xy.shape == (n, 2)
    # TAP-Vid convention: the track passes through its query point, visible there.
    np.testing.assert_allclose(s.tracks[np.arange(n), s.query_frame], s.query_xy, atol=1e-5)
    assert not s.occluded[np.arange(n), s.query_frame].any()


# --------------------------------------------------------------------------- flow vs frames


@pytest.mark.parametrize("which", ["rigid_seq", "nonrigid_seq"])
def test_forward_flow_warps_next_frame_onto_current(which, request):
    seq = request.getfixturevalue(which)
    errs = []
    for t in range(len(seq.flow_fw)):
        warped = backward_warp(_t(seq.frames[t + 1]), _t(seq.flow_fw[t]))[0].permute(1, 2, 0).numpy()
        m = _checked_pixels(seq, t)
        assert m.mean() > 0.4, "too few pixels left to check"
        errs.append(np.abs(warped - seq.frames[t])[m].ravel() / 255.0)
    err = np.concatenate(errs)
    assert err.mean() < 2 / 255, err.mean() * 255
    assert np.percentile(err, 95) < 8 / 255, np.percentile(err, 95) * 255


@pytest.mark.parametrize("which", ["rigid_seq", "nonrigid_seq"])
def test_backward_flow_inverts_forward_flow(which, request):
    seq = request.getfixturevalue(which)
    res = []
    for t in range(len(seq.flow_fw)):
        back = backward_warp(_t(seq.flow_bw[t]), _t(seq.flow_fw[t]))[0].permute(1, 2, 0).numpy()
        res.append(np.linalg.norm(seq.flow_fw[t] + back, axis=-1)[_checked_pixels(seq, t)])
    res = np.concatenate(res)
    assert np.median(res) < 0.05
    assert np.percentile(res, 95) < 0.1


def test_flow_is_not_trivial(nonrigid_seq):
    # Sanity: the checks above would pass vacuously on a static scene.
    mag = np.linalg.norm(nonrigid_seq.flow_fw, axis=-1)
    assert mag.mean() > 0.5


def test_self_check_passes(rigid_seq, nonrigid_seq):
    for seq in (rigid_seq, nonrigid_seq):
        rep = synth.self_check(seq)
        assert rep["ok"], rep
        assert rep["frames_checked"] == "clean"


# --------------------------------------------------------------------------- tracks


def _independent_positions(layer, q_t: int, q_xy: np.ndarray, T: int) -> np.ndarray:
    """Re-derive track positions from a layer's parameters only: plain fixed-point inverse
    of u + D_q(u) = A_q^{-1} x with torch's sampler, then A_t (u + D_t(u))."""
    def D(t, u):
        if layer.field_a is None:
            return torch.zeros_like(u)
        f = math.cos(layer.phase[t]) * layer.field_a + math.sin(layer.phase[t]) * layer.field_b
        h, w = f.shape[:2]
        g = torch.stack([u[:, 0] * 2 / (w - 1) - 1, u[:, 1] * 2 / (h - 1) - 1], -1)[None, None]
        out = F.grid_sample(torch.from_numpy(f).permute(2, 0, 1)[None], g, mode="bilinear",
                            padding_mode="border", align_corners=True)
        return out[0, :, 0].T

    def hom(m, p):
        p = torch.cat([p, torch.ones(len(p), 1, dtype=p.dtype)], 1) @ torch.from_numpy(m).T
        return p[:, :2] / p[:, 2:]

    v = hom(np.linalg.inv(layer.A[q_t]), torch.from_numpy(q_xy.astype(np.float64)))
    u = v.clone()
    for _ in range(400):
        u = v - D(q_t, u)
    return torch.stack([hom(layer.A[t], u + D(t, u)) for t in range(T)], 1).numpy()


@pytest.mark.parametrize("which", ["rigid_seq", "nonrigid_seq"])
def test_tracks_follow_layer_transform(which, request):
    seq = request.getfixturevalue(which)
    T = seq.frames.shape[0]
    seen = set()
    for k, layer in enumerate(seq.layers):
        m = seq.track_layer == k
        if not m.any():
            continue
        seen.add(k)
        for q in np.unique(seq.query_frame[m]):
            mq = m & (seq.query_frame == q)
            ref = _independent_positions(layer, int(q), seq.query_xy[mq], T)
            np.testing.assert_allclose(seq.tracks[mq], ref, atol=1e-3)
    assert len(seen) >= 2, "tracks should land on the background and on foreground layers"


def test_rigid_tracks_are_homography_images_of_query(rigid_seq):
    s = rigid_seq
    for i in range(len(s.query_frame)):
        A = s.layer_transforms[s.track_layer[i]]
        H = A @ np.linalg.inv(A[s.query_frame[i]])           # (T, 3, 3) frame q -> frame t
        p = H @ np.array([*s.query_xy[i].astype(np.float64), 1.0])
        np.testing.assert_allclose(s.tracks[i], p[:, :2] / p[:, 2:], atol=1e-3)


def _alpha_independent(blob, edge, u):
    r = np.hypot(u[:, 0] - blob["cx"], u[:, 1] - blob["cy"])
    th = np.arctan2(u[:, 1] - blob["cy"], u[:, 0] - blob["cx"])
    rad = blob["r0"] * (1 + sum(a * np.cos(k * th + p) for k, (a, p) in enumerate(zip(blob["amps"], blob["phases"]), 2)))
    return np.clip(0.5 + (rad - r) / edge, 0, 1)


def test_occluded_track_points_are_behind_a_front_layer(sources):
    seq = synth.render_sequence(sources, small_cfg(seed=11, layers=3, n_tracks=96))
    h, w = seq.owner.shape[1:]
    inside = ((seq.tracks[..., 0] >= 0) & (seq.tracks[..., 0] <= w - 1)
              & (seq.tracks[..., 1] >= 0) & (seq.tracks[..., 1] <= h - 1))
    hidden_in_frame = seq.occluded & inside
    assert hidden_in_frame.sum() >= 5, "scene should contain occlusions"
    n, T = seq.occluded.shape
    for i in range(n):
        for t in range(T):
            if not inside[i, t]:
                continue
            p = seq.tracks[i, t].astype(np.float64)[None]
            covered = False
            for k in range(int(seq.track_layer[i]) + 1, len(seq.layers)):
                ly = seq.layers[k]
                u = (np.linalg.inv(ly.A[t]) @ np.array([p[0, 0], p[0, 1], 1.0]))[:2][None]   # rigid scene
                covered |= bool(_alpha_independent(ly.blob, ly.edge_width, u)[0] >= 0.5)
            assert covered == bool(seq.occluded[i, t]), (i, t)
    # And the rendered layer map agrees away from edges: hidden points show a front layer.
    agree = []
    for i, t in zip(*np.nonzero(hidden_in_frame)):
        x, y = np.rint(seq.tracks[i, t]).astype(int)
        if not _near_boundary(seq, t)[y, x]:
            agree.append(seq.owner[t, y, x] > seq.track_layer[i])
    assert agree and all(agree)


def test_out_of_frame_is_occluded(sources):
    # Fast layers and camera: surfaces leave the frame within 4 frames.
    seq = synth.render_sequence(sources, small_cfg(seed=5, camera_motion=6.0, layer_speed=12.0, n_tracks=64))
    h, w = seq.owner.shape[1:]
    out = ((seq.tracks[..., 0] < 0) | (seq.tracks[..., 0] > w - 1)
           | (seq.tracks[..., 1] < 0) | (seq.tracks[..., 1] > h - 1))
    assert out.any()
    assert seq.occluded[out].all()
    # Positions are not clamped: they keep following the surface outside the frame.
    assert (seq.tracks[..., 0].min() < -1) or (seq.tracks[..., 0].max() > w) or \
           (seq.tracks[..., 1].min() < -1) or (seq.tracks[..., 1].max() > h)
    for flows, occ in ((seq.flow_fw, seq.occ_fw), (seq.flow_bw, seq.occ_bw)):
        leaving = ~inside_frame(torch.from_numpy(flows).permute(0, 3, 1, 2)).numpy()
        assert leaving.any()
        assert occ[leaving].all()


def test_extra_query_frames(sources):
    seq = synth.render_sequence(sources, small_cfg(seed=2, query_frames=(0, 2), n_tracks=20))
    assert sorted(np.unique(seq.query_frame)) == [0, 2]
    n = len(seq.query_frame)
    np.testing.assert_allclose(seq.tracks[np.arange(n), seq.query_frame], seq.query_xy, atol=1e-5)
    assert not seq.occluded[np.arange(n), seq.query_frame].any()


# --------------------------------------------------------------------------- non-rigid amplitude


def test_nonrigid_amplitude_is_peak_frame_to_frame_change(nonrigid_seq):
    for k, (layer, info) in enumerate(zip(nonrigid_seq.layers, nonrigid_seq.info["layers"])):
        d = [layer.field(t) for t in range(4)]
        peak = max(np.linalg.norm(d[t + 1] - d[t], axis=-1).max() for t in range(3))
        assert info["nonrigid_amplitude"] == pytest.approx(peak, rel=1e-9)
        if not info["strain_capped"]:
            assert peak == pytest.approx(NONRIGID["nonrigid_amplitude"], rel=1e-9)
        assert info["strain"] <= nonrigid_seq.config.max_strain + 1e-12


def test_strain_cap_keeps_warp_fold_free(sources):
    # 6 px changes at sigma 3 px would fold; the field is scaled to max_strain instead.
    seq = synth.render_sequence(sources, small_cfg(seed=1, nonrigid_amplitude=6.0, nonrigid_sigma=3.0))
    infos = seq.info["layers"]
    assert any(i["strain_capped"] for i in infos)
    for i in infos:
        assert i["strain"] <= seq.config.max_strain + 1e-9 and i["nonrigid_amplitude"] <= 6.0 + 1e-9
    assert seq.info["inverse_residual_max"] < 1e-6


# --------------------------------------------------------------------------- photometric / storage / config


def test_photometric_changes_frames_not_ground_truth(sources):
    photo = dict(brightness=0.2, contrast=0.1, noise=3.0, blur=1.0, jpeg_quality=60)
    plain = synth.render_sequence(sources, small_cfg(seed=6))
    changed = synth.render_sequence(sources, small_cfg(seed=6, photometric=photo))
    np.testing.assert_array_equal(changed.frames_clean, plain.frames)
    np.testing.assert_array_equal(changed.flow_fw, plain.flow_fw)
    np.testing.assert_array_equal(changed.tracks, plain.tracks)
    diff = np.abs(changed.frames.astype(int) - plain.frames.astype(int)).mean()
    assert diff > 1.0
    assert synth.self_check(changed)["ok"]  # judged on the clean frames


def test_photometric_roundtrip_keeps_clean_frames(tmp_path, sources):
    seq = synth.render_sequence(sources, small_cfg(seed=6, photometric=dict(noise=4.0, jpeg_quality=50)))
    synth.write_sequence(seq, tmp_path / "p.zarr")
    back = synth.read_sequence(tmp_path / "p.zarr")
    np.testing.assert_array_equal(back.frames, seq.frames)
    np.testing.assert_array_equal(back.frames_clean, seq.frames_clean)
    assert back.config.photometric["jpeg_quality"] == 50
    rep = synth.self_check(back)
    assert rep["ok"] and rep["frames_checked"] == "clean"
    assert synth.self_check(back, use_clean=False)["frames_checked"] == "photometric"


def test_write_read_roundtrip(tmp_path, nonrigid_seq):
    path = tmp_path / "scene.zarr"
    synth.write_sequence(nonrigid_seq, path, {"source": "dog_run/000100.jpg etc."})
    back = synth.read_sequence(path)
    for name in ("frames", "flow_fw", "flow_bw", "occ_fw", "occ_bw", "tracks", "occluded", "query_frame", "query_xy"):
        np.testing.assert_array_equal(getattr(back, name), getattr(nonrigid_seq, name), err_msg=name)
        assert getattr(back, name).dtype == getattr(nonrigid_seq, name).dtype
    assert back.config == nonrigid_seq.config
    import zarr
    g = zarr.open_group(str(path), mode="r")
    assert g.attrs["seed"] == 4 and g.attrs["source"].startswith("dog_run")
    assert [p.name for p in tmp_path.iterdir()] == ["scene.zarr"]   # no temporary left behind
    assert synth.self_check(back)["ok"]


def test_bad_input_raises(sources):
    with pytest.raises(MotionRefineError):
        synth.render_sequence([], small_cfg())
    with pytest.raises(MotionRefineError):
        synth.render_sequence([sources[0][..., 0]], small_cfg())
    with pytest.raises(MotionRefineError):
        synth.render_sequence(sources, small_cfg(frames=1))
    with pytest.raises(MotionRefineError):
        synth.render_sequence(sources, small_cfg(max_strain=1.2))
    with pytest.raises(MotionRefineError):
        synth.make_config("no_such_preset")
    with pytest.raises(MotionRefineError):
        synth.read_sequence("/nonexistent/scene.zarr")


def test_presets_and_benchmark_mix():
    assert synth.make_config("easy").nonrigid_amplitude == 0
    mild, hard = synth.make_config("nonrigid_mild"), synth.make_config("nonrigid_hard")
    assert (mild.nonrigid_amplitude, mild.nonrigid_sigma) == (8.0, 40.0)
    assert (hard.nonrigid_amplitude, hard.nonrigid_sigma) == (20.0, 15.0)
    a = synth.benchmark_configs(8, seed=1)
    b = synth.benchmark_configs(8, seed=1)
    assert a == b
    names = [n for n, _ in a]
    assert {n: names.count(n) for n in set(names)} == {p: 2 for p in synth.DEFAULT_MIX}
    assert len({c.seed for _, c in a}) == 8
