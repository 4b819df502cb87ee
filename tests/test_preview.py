"""The preview MP4: frames with tracks beside the flow colour, readable by PyAV and OpenCV."""
from __future__ import annotations

import logging
import os
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from motionrefine.core.errors import MotionRefineError
from motionrefine.io import preview
from motionrefine.io.preview import store_fps, write_preview
from motionrefine.report.flowviz import flow_to_rgb

T, H, W = 5, 63, 95  # odd on purpose: the encoder needs even sizes
GREY = 128


@pytest.fixture
def clip():
    frames = np.full((T, H, W, 3), GREY, np.uint8)
    flow = np.zeros((T - 1, H, W, 2), np.float32)
    flow[..., 0] = 2.0  # everything moves right: full red at the video's scale of 2 px
    # a visible point fixed at (30, 20), an occluded one at (60, 40), one sliding right along y = 50
    tracks = np.zeros((3, T, 2))
    tracks[0] = [30, 20]
    tracks[1] = [60, 40]
    tracks[2, :, 0], tracks[2, :, 1] = 10 + 10 * np.arange(T), 50
    visible = np.ones((3, T), bool)
    visible[1] = False
    return frames, flow, tracks, visible


def decode_pyav(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in c.decode(s)], s.codec_context.name, s.average_rate, \
            s.codec_context.pix_fmt


def decode_cv2(path):
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    out = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(bgr)
    cap.release()
    return out


def test_preview_opens_in_pyav_and_opencv(clip, tmp_path):
    codec = write_preview(tmp_path / "p.mp4", *clip, fps=30000 / 1001)
    images, name, rate, pix_fmt = decode_pyav(tmp_path / "p.mp4")
    assert len(images) == T and images[0].shape == (H + 1, 2 * W, 3)  # padded to even height
    assert (name, pix_fmt) == ("h264", "yuv420p") and codec == "libx264"
    assert rate == Fraction(30000, 1001)  # NTSC rate kept exact
    cv = decode_cv2(tmp_path / "p.mp4")
    assert len(cv) == T and cv[0].shape == (H + 1, 2 * W, 3)
    assert os.listdir(tmp_path) == ["p.mp4"]


def test_tracks_are_drawn_where_they_are(clip, tmp_path):
    write_preview(tmp_path / "p.mp4", *clip)
    images, *_ = decode_pyav(tmp_path / "p.mp4")
    diff = [np.abs(im[:H, :W].astype(int) - GREY).max(-1) for im in images]
    assert diff[0][20, 30] > 80                         # visible: a filled dot
    assert diff[0][40, 60] < 30 and diff[0][40, 63] > 40  # occluded: a ring, its centre left alone
    assert diff[0][5, 5] < 8 and diff[0][50, 30] < 8    # elsewhere the frame; no tail yet at frame 0
    assert diff[4][50, 30] > 40                         # by frame 4 the sliding point's tail crosses x = 30


def test_flow_panel_is_the_flow_colour_and_black_after_the_last_pair(clip, tmp_path):
    write_preview(tmp_path / "p.mp4", *clip)
    images, *_ = decode_pyav(tmp_path / "p.mp4")
    red = flow_to_rgb(clip[1][0], max_mag=2.0)[0, 0]
    assert red.tolist() == [255, 0, 0]
    np.testing.assert_allclose(images[0][8:H - 8, W + 8:2 * W - 8].reshape(-1, 3).mean(0), red, atol=12)
    assert images[-1][:H, W:].max() < 20


def test_without_flow_only_the_tracks_panel_and_default_fps(clip, tmp_path):
    frames, _, tracks, _ = clip
    write_preview(tmp_path / "p.mp4", frames, tracks=tracks)
    images, _, rate, _ = decode_pyav(tmp_path / "p.mp4")
    assert len(images) == T and images[0].shape == (H + 1, W + 1, 3) and rate == 10
    assert np.abs(images[0][40, 60].astype(int) - GREY).max() > 80  # no visible flags: all drawn visible


def test_frames_and_flow_may_be_zarr_arrays(clip, tmp_path):
    from motionrefine.core.store import atomic_group, open_group, write_array

    with atomic_group(tmp_path / "s.zarr") as g:
        write_array(g, "frames", clip[0])
        write_array(g, "flow", clip[1])
    g = open_group(tmp_path / "s.zarr")
    write_preview(tmp_path / "p.mp4", g["frames"], g["flow"])
    assert len(decode_cv2(tmp_path / "p.mp4")) == T


@pytest.mark.parametrize("change, needle", [
    (lambda f, fl, tr, v: (f[..., 0], fl, tr, v), "frames must be (T, H, W, 3) uint8"),
    (lambda f, fl, tr, v: (f.astype(np.float32), fl, tr, v), "frames must be"),
    (lambda f, fl, tr, v: (f, fl[:-1], tr, v), "flow must be (T-1, H, W, 2) = (4, 63, 95, 2)"),
    (lambda f, fl, tr, v: (f, fl, tr[:, :-1], v), "tracks must be (N, T, 2) with T = 5"),
    (lambda f, fl, tr, v: (f, fl, tr, v[:2]), "visible must be (N, T) = (3, 5)"),
    (lambda f, fl, tr, v: (f, fl, None, v), "visible given without tracks"),
])
def test_bad_shapes_give_one_error_and_no_file(clip, tmp_path, change, needle):
    with pytest.raises(MotionRefineError) as err:
        write_preview(tmp_path / "p.mp4", *change(*clip))
    assert str(tmp_path / "p.mp4") in str(err.value) and needle in str(err.value)
    assert os.listdir(tmp_path) == []


def test_a_failure_while_encoding_leaves_no_file(clip, tmp_path, monkeypatch):
    compose = preview.compose

    def fail_at_frame_2(frames, flow, tracks, visible, t, *args):
        if t == 2:
            raise RuntimeError("disk full")
        return compose(frames, flow, tracks, visible, t, *args)

    monkeypatch.setattr(preview, "compose", fail_at_frame_2)
    with pytest.raises(RuntimeError, match="disk full"):
        write_preview(tmp_path / "p.mp4", *clip)
    assert os.listdir(tmp_path) == []


def test_without_h264_the_preview_is_mpeg4_and_says_so(clip, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(preview, "H264_ENCODERS", ("no_such_h264_encoder",))
    with caplog.at_level(logging.WARNING, logger="motionrefine"):
        assert write_preview(tmp_path / "p.mp4", *clip) == "mpeg4"
    assert "no H.264 encoder" in caplog.text
    images, name, _, _ = decode_pyav(tmp_path / "p.mp4")
    assert name == "mpeg4" and len(images) == T and len(decode_cv2(tmp_path / "p.mp4")) == T


def test_fps_of_a_frames_store_and_bad_values(clip, tmp_path):
    assert store_fps({"fps": 30.0, "stride": 2}) == 15.0
    assert store_fps({"fps": None, "stride": 1}) is None and store_fps({}) is None
    for bad in (0, -5, float("nan")):
        with pytest.raises(MotionRefineError, match="fps must be"):
            write_preview(tmp_path / "p.mp4", *clip, fps=bad)
    with pytest.raises(MotionRefineError, match=r"name it \*.mp4"):
        write_preview(tmp_path / "p.avi", *clip)
    assert os.listdir(tmp_path) == []
