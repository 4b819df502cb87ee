"""Cycle verification of flow, the label stage and track re-balancing."""

import json
import math

import numpy as np
import pytest
import torch

from motionrefine.flow.cycle import REASONS, pair_stats, resolve_checks, speed_bin_index, verify_flow
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.geometry import inside_frame
from motionrefine.flow.labels import aggregate_labels, label_stats_table, load_training_pairs, make_flow_labels
from motionrefine.flow.rebalance import cap_bins, speed_filter, track_speed
from motionrefine.core.store import atomic_group, open_group, write_array

H, W = 24, 40


def translated_pair(u: int, v: int, b: int = 1, seed: int = 0):
    """Random texture I1 and I2 with I2(x + (u, v)) = I1(x) exactly; constant flows (B,2,H,W)."""
    rng = np.random.default_rng(seed)
    big = torch.from_numpy(rng.uniform(0, 255, (b, 3, H + 40, W + 40)).astype(np.float32))
    y0, x0 = 20, 20
    i1 = big[..., y0:y0 + H, x0:x0 + W]
    i2 = big[..., y0 - v:y0 - v + H, x0 - u:x0 - u + W]
    ff = torch.zeros(b, 2, H, W)
    ff[:, 0], ff[:, 1] = float(u), float(v)
    return i1, i2, ff, -ff


def test_pure_translation_passes_everywhere_inside_the_frame():
    i1, i2, ff, fb = translated_pair(3, -2, b=2)
    res = verify_flow(ff, fb, i1, i2)
    inside = inside_frame(ff)
    assert torch.equal(res.keep, inside)
    assert 0 < int(inside.sum()) < inside.numel()
    assert torch.equal(res.rejected["out_of_frame"], ~inside)
    assert not res.rejected["non_finite"].any()
    # In-frame pixels pass both tests exactly.
    assert not (res.rejected["inconsistent"] & inside).any()
    assert not (res.rejected["colour"] & inside).any()


def test_backward_flow_wrong_by_one_pixel_fails_where_the_threshold_says():
    alpha, beta = 0.05, 0.1
    us = [2, 8, 9, 10, 14]
    ff = torch.zeros(len(us), 2, H, W)
    fb = torch.zeros_like(ff)
    for k, u in enumerate(us):
        ff[k, 0] = u
        fb[k, 0] = -u + 1.0  # cycle error exactly 1 px
    res = verify_flow(ff, fb, alpha=alpha, beta=beta, checks="fb")
    inside = inside_frame(ff)
    for k, u in enumerate(us):
        thr = alpha * (u + abs(1 - u)) + beta
        expect = 1.0 < thr  # 2, 8, 9 fail; 10, 14 pass
        assert torch.equal(res.keep[k], inside[k] & expect), u
        assert torch.allclose(res.fb_error[k][inside[k]], torch.tensor(1.0))
    assert [bool(res.keep[k].any()) for k in range(len(us))] == [False, False, False, True, True]
    # Default (strict) thresholds reject a 1 px cycle error everywhere.
    assert not verify_flow(ff, fb, checks="fb").keep.any()


def test_threshold_uses_backward_magnitude_at_the_displaced_position():
    # F_f = (4, 0); F_b = (−3, 0) where pixels are reached, (−100, 0) in columns 0..3 which no
    # pixel reaches. With |F_b(x)| (official) columns 0..3 would pass (τ ≈ 5.3 > 1); with the
    # displaced |F_b(x + F_f)| they fail (τ = 0.45 < 1), as the issue specifies.
    ff = torch.zeros(1, 2, H, W)
    ff[:, 0] = 4.0
    fb = torch.zeros_like(ff)
    fb[:, 0] = -3.0
    fb[:, 0, :, :4] = -100.0
    res = verify_flow(ff, fb, alpha=0.05, beta=0.1, checks="fb")
    assert not res.keep[0, :, :4].any()
    assert torch.allclose(res.fb_threshold[0, :, :4], torch.tensor(0.05 * 7 + 0.1))


def test_out_of_frame_max_flow_and_non_finite_are_rejected():
    i1, i2, ff, fb = translated_pair(2, 1)
    ff = ff.clone()
    ff[0, :, 5, 5] = float("nan")
    ff[0, 0, 10, 10] = 100.0  # lands outside the frame
    fb = fb.clone()
    fb[0, :, 15, 20] = float("inf")  # tainted: every pixel sampling near (20, 15)
    res = verify_flow(ff, fb, i1, i2)
    nf = res.rejected["non_finite"][0]
    assert nf[5, 5] and not res.keep[0, 5, 5]
    # x + (2, 1) within one pixel of (20, 15) ⇒ x = (18, 14) samples exactly there.
    assert nf[14, 18] and not res.keep[0, 14, 18]
    # A non-finite pixel counts only as non_finite.
    for r in ("inconsistent", "colour", "out_of_frame"):
        assert not (res.rejected[r][0] & nf).any()
    assert res.rejected["out_of_frame"][0, 10, 10] and not res.keep[0, 10, 10]
    assert not torch.isnan(res.fb_error).any()  # NaN did not leak into neighbours
    assert res.keep[0, 5, 6] and res.keep[0, 6, 5]
    # max_flow: a 2.24 px flow is rejected with max_flow 2, under out_of_frame.
    res2 = verify_flow(*translated_pair(2, 1)[2:], *translated_pair(2, 1)[:2], max_flow=2.0)
    assert not res2.keep.any() and res2.rejected["out_of_frame"].all()


def test_colour_check_and_presets():
    i1, i2, ff, fb = translated_pair(1, 1)
    i2 = i2.clone()
    i2[..., 10:14, 10:14] += 2.0  # 2/255 > 0.005 in [−0.5, 0.5] units
    res = verify_flow(ff, fb, i1, i2)
    bad = res.rejected["colour"][0]
    assert bad[9:13, 9:13].all() and bad.sum() <= 4 * 4 + 2 * (W + H)
    assert not res.keep[0, 9:13, 9:13].any()
    assert verify_flow(ff, fb, i1, i2, checks="fb").keep[0, 9:13, 9:13].all()
    # "none" keeps every finite in-frame pixel even with a wildly inconsistent backward flow.
    res_none = verify_flow(ff, torch.randn_like(fb) * 10, checks="none")
    assert torch.equal(res_none.keep, inside_frame(ff))
    assert resolve_checks("fb+colour") == (True, True)
    with pytest.raises(MotionRefineError):
        verify_flow(ff, fb, checks="colour-only")
    with pytest.raises(MotionRefineError):
        verify_flow(ff, fb)  # colour check without images


def test_pair_stats_by_speed_bin_and_rejections():
    ff = torch.zeros(1, 2, H, W)
    ff[0, 0, : H // 2] = 0.5  # top rows: bin 0 (horizontal flow, so rows never mix)
    ff[0, 0, H // 2:] = -3.0  # bottom rows: bin 2
    fb = -ff
    fb[0, 0, : H // 2, :5] = 7.0  # slow columns 0..4 are inconsistent
    st = pair_stats(verify_flow(ff, fb, checks="fb"))
    inside = inside_frame(ff)[0]
    assert st["pixels_by_bin"].tolist() == [[H * W // 2, 0, H * W // 2, 0]]
    kept_slow = (W - 5 - 1) * H // 2  # minus the last column, which leaves the frame
    kept_fast = (W - 3) * H // 2
    assert st["kept_by_bin"].tolist() == [[kept_slow, 0, kept_fast, 0]]
    assert math.isnan(st["kept_fraction_by_bin"][0, 1])
    assert st["kept_fraction_by_bin"][0, 2] == pytest.approx(kept_fast / (H * W // 2))
    assert st["kept_fraction"][0] == pytest.approx((kept_slow + kept_fast) / (H * W))
    # Reasons overlap: out-of-frame pixels sample zero-padded F_b, so they are also inconsistent.
    assert st["rejected"][0, REASONS.index("inconsistent")] == 5 * H // 2 + int((~inside).sum())
    assert st["rejected"][0, REASONS.index("out_of_frame")] == int((~inside).sum()) == (1 + 3) * H // 2
    idx = speed_bin_index(torch.tensor([0.0, 0.99, 1.0, 4.49, 4.5, 1e6, float("nan")]), [0, 1, 2, 4.5, math.inf])
    assert idx.tolist() == [0, 0, 1, 2, 3, 3, -1]


def test_track_speed_filter_and_bin_cap():
    s = 8
    t = np.arange(s)[None, :, None].astype(float)
    speeds = np.array([0.0, 0.5, 3.0, 6.0, 10.0])
    tracks = np.concatenate([speeds[:, None, None] * t, np.zeros((5, s, 1))], axis=-1)  # (5, 8, 2)
    # Official Horse10 definition divides the path length by the window length S.
    assert np.allclose(track_speed(tracks), speeds * (s - 1) / s)
    assert np.allclose(track_speed(tracks, "steps"), speeds)
    assert speed_filter(tracks, 5.0).tolist() == [False, False, False, True, True]
    # 60 slow, 10 medium, 5 fast tracks; cap any bin at 50 % of what is kept.
    sp = np.r_[np.full(60, 0.2), np.full(10, 3.0), np.full(5, 8.0)]
    tr = np.concatenate([sp[:, None, None] * t, np.zeros((75, s, 1))], axis=-1)
    keep = cap_bins(tr, [0, 1, 2, 4.5, math.inf], 0.5, np.random.default_rng(0), divisor="steps")
    assert keep[60:].all() and keep[:60].sum() == 15  # cap c = 15 = 0.5 · (15 + 10 + 5)
    again = cap_bins(tr, [0, 1, 2, 4.5, math.inf], 0.5, np.random.default_rng(0), divisor="steps")
    assert np.array_equal(keep, again)
    with pytest.raises(MotionRefineError):
        cap_bins(tr, [0, 1, 2, 4.5, math.inf], 0.2, np.random.default_rng(0), divisor="steps")


# ------------------------------------------------------------------ label stage on constructed stores

def write_video(tmp_path, u=2, v=1, t=4, nan_pair=None):
    """Frames that translate by (u, v) per frame, with exact constant flow stores."""
    rng = np.random.default_rng(0)
    big = rng.uniform(0, 255, (H + 40, W + 40, 3)).astype(np.uint8)
    frames = np.stack([big[20 - k * v:20 - k * v + H, 20 - k * u:20 - k * u + W] for k in range(t)])
    fw = np.zeros((t - 1, H, W, 2), np.float32)
    fw[..., 0], fw[..., 1] = u, v
    finite = np.ones(t - 1, bool)
    if nan_pair is not None:
        finite[nan_pair] = False
    with atomic_group(tmp_path / "frames.zarr") as g:
        write_array(g, "frames", frames)
        g.attrs["source"] = {"path": "synthetic"}
    with atomic_group(tmp_path / "flow.zarr") as g:
        write_array(g, "flow_fw", fw)
        write_array(g, "flow_bw", -fw)
        g.create_array("pair_finite", data=finite)
        g.attrs.update({"checkpoint_sha256": "abc123", "iters": 12})
    return frames, fw


def test_make_flow_labels_store(tmp_path):
    frames, fw = write_video(tmp_path, nan_pair=1)
    out = tmp_path / "labels" / "flow" / "synth.zarr"
    summary = make_flow_labels(str(tmp_path / "frames.zarr"), str(tmp_path / "flow.zarr"), str(out), batch_size=2)
    g = open_group(out)
    keep = g["keep"][:]
    flow = g["flow"][:]
    inside = inside_frame(torch.from_numpy(fw).permute(0, 3, 1, 2)).numpy()
    assert keep.dtype == bool and flow.dtype == np.float32 and flow.shape == fw.shape
    assert np.array_equal(keep[0], inside[0]) and np.array_equal(keep[2], inside[2])
    assert not keep[1].any()  # non-finite pair rejected whole
    assert np.array_equal(flow[keep], fw[keep]) and not flow[~keep].any()
    rej = g["rejected"][:]
    assert g["rejected"].attrs["columns"] == list(REASONS)
    assert rej[1, REASONS.index("non_finite")] == H * W and rej[1, :3].sum() == 0
    a = dict(g.attrs)
    assert a["checkpoint_sha256"] == "abc123" and a["checks"] == "fb+colour" and a["video"] == "synth"
    assert a["thresholds"] == {"alpha": 0.002, "beta": 0.1, "colour": 0.005, "max_flow": 400.0, "colour_norm": "raw"}
    assert a["speed_bins"][-1] == math.inf and a["code_version"]
    assert a["frames_store"]["shape"] == list(frames.shape) and a["flow_store"]["iters"] == 12
    assert g["kept_fraction"][:] == pytest.approx(keep.reshape(3, -1).mean(1))
    assert summary["pairs"] == 3
    assert not list(out.parent.glob(".*tmp*"))  # atomic: nothing left behind

    df = label_stats_table([str(out)])
    assert len(df) == 3 and list(df["pair"]) == [0, 1, 2]
    assert "kept_fraction_speed_2-4.5" in df and "rejected_colour" in df
    assert df.loc[1, "rejected_non_finite"] == H * W

    index = tmp_path / "labels" / "training_set.json"
    info = aggregate_labels([str(out)], [str(tmp_path / "frames.zarr")], str(index))
    # The empty pair is left out, in both directions; reverse pairs are verified like forward ones.
    assert info == {"videos": 1, "pairs": 4, "checkpoint_sha256": "abc123"}
    pairs = load_training_pairs(index)
    assert [(p.direction, p.pair) for p in pairs] == [("fw", 0), ("fw", 2), ("bw", 0), ("bw", 2)]
    assert open_group(pairs[0].frames)["frames"].shape == frames.shape
    assert json.loads(index.read_text())["videos"][0]["labels"] == "flow/synth.zarr"  # relative to the index


def test_aggregate_refuses_mismatched_frames(tmp_path):
    write_video(tmp_path / "a")
    write_video(tmp_path / "b", u=1, t=5)
    out = tmp_path / "a" / "l.zarr"
    make_flow_labels(str(tmp_path / "a" / "frames.zarr"), str(tmp_path / "a" / "flow.zarr"), str(out))
    with pytest.raises(MotionRefineError, match="not the frames store"):
        aggregate_labels([str(out)], [str(tmp_path / "b" / "frames.zarr")], str(tmp_path / "i.json"))
    with pytest.raises(MotionRefineError, match="do not fit"):
        make_flow_labels(str(tmp_path / "b" / "frames.zarr"), str(tmp_path / "a" / "flow.zarr"), str(tmp_path / "x.zarr"))


def test_gradient_normalised_colour_error_estimates_the_flow_error():
    # A horizontal ramp of slope g per px, flat (constant) on the left half. Forward flow is
    # wrong by 0.5 px in x: the raw colour error is g·0.5 on the ramp and 0 on the flat part,
    # so a raw threshold between them keeps only the flat pixels; the normalised error is the
    # 0.5 px flow error on the ramp, whatever its slope, and the threshold means pixels.
    from motionrefine.flow.cycle import GRADIENT_FLOOR, colour_error
    h, w = 16, 64
    x = torch.arange(w, dtype=torch.float32)
    ramp = torch.where(x < w // 2, torch.zeros(()), (x - w // 2) * 6.0)  # 6 grey levels / px
    img = (ramp + 40.0).expand(1, 3, h, w).contiguous()
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0] = 0.5  # truth: zero motion (image2 == image1)
    raw = colour_error(img, img, flow)
    norm = colour_error(img, img, flow, normalise=True)
    inner = slice(w // 2 + 2, w - 2)
    g = 6.0 / 255.0
    assert raw[0, 4:-4, inner] == pytest.approx(torch.full_like(raw[0, 4:-4, inner], 0.5 * g), abs=1e-5)
    assert norm[0, 4:-4, inner] == pytest.approx(torch.full_like(norm[0, 4:-4, inner], 0.5), abs=1e-4)
    # Flat pixels: zero error either way (the floor only prevents division by zero).
    assert float(norm[0, :, 2:w // 2 - 2].abs().max()) < 1e-4
    assert GRADIENT_FLOOR > 0
    # verify_flow with colour_norm="gradient" keeps the ramp at a 1 px bound, rejects it at 0.25 px.
    res_loose = verify_flow(flow, -flow, img, img, beta=10.0, colour=1.0, colour_norm="gradient")
    res_tight = verify_flow(flow, -flow, img, img, beta=10.0, colour=0.25, colour_norm="gradient")
    assert bool(res_loose.keep[0, 4:-4, inner].all())
    assert not bool(res_tight.keep[0, 4:-4, inner].any())
    with pytest.raises(MotionRefineError, match="colour_norm"):
        verify_flow(flow, -flow, img, img, colour_norm="census")


def test_label_quality_reports_the_student_on_the_same_kept_pixels(tmp_path):
    # Truth: 3 px/frame to the right. Labels 0.5 px off, kept on the left half only; the
    # student is 2 px off on the left half and exact on the right: on the kept pixels the
    # label (0.5) beats the student (2.0), though the student is better on the whole frame.
    from motionrefine.bench.scenes import label_quality
    from motionrefine.io.readers import FlowScene
    n, h, w = 2, 8, 12
    truth = np.zeros((n, h, w, 2), np.float32)
    truth[..., 0] = 3.0
    labels = truth.copy()
    labels[..., 1] += 0.5
    keep = np.zeros((n, h, w), bool)
    keep[:, :, : w // 2] = True
    student = truth.copy()
    student[:, :, : w // 2, 0] += 2.0
    with atomic_group(tmp_path / "labels.zarr") as g:
        write_array(g, "keep", keep)
        write_array(g, "flow", labels)
    scene = FlowScene("s", np.zeros((n + 1, h, w, 3), np.uint8), truth, np.ones((n, h, w), bool))
    row = label_quality(str(tmp_path / "labels.zarr"), scene, (0, 1, 2, 4.5), student=student)
    assert row["kept_fraction"] == pytest.approx(0.5)
    assert row["label_epe"] == pytest.approx(0.5)
    assert row["student_epe_on_kept"] == pytest.approx(2.0)
    # Every pixel moves 3 px: the 2-4.5 bin holds them all, the others are empty (NaN EPE).
    assert row["label_epe_2-4.5px"] == pytest.approx(0.5) and row["student_epe_2-4.5px"] == pytest.approx(2.0)
    assert math.isnan(row["label_epe_0-1px"]) and row["kept_fraction_2-4.5px"] == pytest.approx(0.5)
    with pytest.raises(MotionRefineError, match="student flow"):
        label_quality(str(tmp_path / "labels.zarr"), scene, student=student[:1])
