"""Frame extraction (motionrefine/io/video.py) on the real videos in ../shared and on broken inputs made here."""
from __future__ import annotations

import logging
import re
import struct

import av
import cv2
import numpy as np
import pytest
import zarr

from motionrefine.core.errors import MotionRefineError, VideoError
from motionrefine.io.video import extract_frames, parse_resize
from motionrefine.core.store import sha256_file


def read_store(path):
    g = zarr.open_group(str(path), mode="r")
    return g["frames"], dict(g.attrs)


def assert_nothing_left(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")]


def decode_index(path, index):
    cap = cv2.VideoCapture(str(path))
    for _ in range(index + 1):
        ok, bgr = cap.read()
        assert ok
    cap.release()
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_video(path, frames, fps=10.0):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()


def test_video_range_stride_resize(shared, tmp_path):
    src = shared / "data/videos/tree.avi"
    out = tmp_path / "tree.zarr"
    attrs = extract_frames(src, out, start=5, end=20, stride=3, resize="96x64")
    frames, stored = read_store(out)
    assert frames.shape == (5, 64, 96, 3) and frames.dtype == np.uint8
    assert frames.chunks == (1, 64, 96, 3)  # one chunk per frame
    assert stored == attrs
    assert stored["frame_indices"] == [5, 8, 11, 14, 17]
    assert stored["original_size"] == {"width": 320, "height": 240}
    assert stored["stored_size"] == {"width": 96, "height": 64}
    assert stored["fps"] == pytest.approx(15.0, rel=1e-3)
    assert stored["source_sha256"] == sha256_file(src)
    assert stored["source_size_bytes"] == src.stat().st_size
    assert stored["source_path"] == str(src.resolve()) and stored["code_version"]
    # The stored frame is the selected source frame, in RGB order.
    expected = cv2.resize(decode_index(src, 8), (96, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(frames[1], expected)


def test_video_to_the_end_despite_wrong_container_count(shared, tmp_path):
    # tree.avi's header claims 444 frames; 68 decode. Without `end` we keep what decodes.
    extract_frames(shared / "data/videos/tree.avi", tmp_path / "t.zarr", start=60, resize=32)
    frames, attrs = read_store(tmp_path / "t.zarr")
    assert frames.shape == (8, 32, 43, 3)
    assert attrs["frame_indices"] == list(range(60, 68))


def test_end_beyond_video_is_an_error(shared, tmp_path):
    out = tmp_path / "t.zarr"
    with pytest.raises(VideoError, match=r"tree\.avi: video ends after 68 frames but end=100"):
        extract_frames(shared / "data/videos/tree.avi", out, start=60, end=100)
    assert_nothing_left(out)


def test_frame_folder_short_side(shared, tmp_path):
    src = shared / "data/frames/dog_run"
    attrs = extract_frames(src, tmp_path / "dog.zarr", end=6, stride=2, resize=72)
    frames, _ = read_store(tmp_path / "dog.zarr")
    assert frames.shape == (3, 72, 128, 3)
    assert attrs["source_kind"] == "folder" and attrs["fps"] is None
    assert attrs["frame_indices"] == [0, 2, 4]
    assert len(attrs["source_listing_sha256"]) == 64
    first = sorted(src.iterdir())[0]
    expected = cv2.resize(cv2.cvtColor(cv2.imread(str(first)), cv2.COLOR_BGR2RGB), (128, 72), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(frames[0], expected)


def make_folder(tmp_path, names, sizes=None):
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        h, w = sizes[i] if sizes else (16, 24)
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return folder


def test_folder_natural_order_and_hidden_files_ignored(tmp_path):
    folder = make_folder(tmp_path, ["f10.png", "f2.png", "f1.png"])
    (folder / ".DS_Store").write_bytes(b"\0")
    extract_frames(folder, tmp_path / "o.zarr")
    frames, _ = read_store(tmp_path / "o.zarr")
    for i, name in enumerate(["f1.png", "f2.png", "f10.png"]):
        np.testing.assert_array_equal(frames[i], cv2.cvtColor(cv2.imread(str(folder / name)), cv2.COLOR_BGR2RGB))


def test_folder_with_stray_text_file(tmp_path):
    folder = make_folder(tmp_path, ["0001.png", "0002.png"])
    (folder / "notes.txt").write_text("not a frame")
    out = tmp_path / "o.zarr"
    with pytest.raises(VideoError, match=r"notes\.txt: not an image file"):
        extract_frames(folder, out)
    assert_nothing_left(out)


def test_folder_with_changing_frame_size(tmp_path):
    folder = make_folder(tmp_path, ["0001.png", "0002.png", "0003.png"], sizes=[(16, 24), (16, 24), (20, 24)])
    out = tmp_path / "o.zarr"
    with pytest.raises(VideoError, match=r"0003\.png: frame size 24x20 differs .* 24x16"):
        extract_frames(folder, out, resize="8x8")
    assert_nothing_left(out)  # a job that fails mid-stream leaves no store, not even a partial one


def test_folder_with_corrupt_image(tmp_path):
    folder = make_folder(tmp_path, ["0001.png", "0002.png"])
    (folder / "0002.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(VideoError, match=r"0002\.png: cannot decode image"):
        extract_frames(folder, tmp_path / "o.zarr")


def test_truncated_mp4(shared, tmp_path):
    data = (shared / "data/videos/carphone_pristine.mp4").read_bytes()
    bad = tmp_path / "carphone_truncated.mp4"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "bad.zarr"
    with pytest.raises(MotionRefineError, match=r"carphone_truncated\.mp4: cannot open video"):
        extract_frames(bad, out, end=24)
    assert_nothing_left(out)


def test_one_frame_video(tmp_path):
    video = tmp_path / "one.avi"
    write_video(video, [np.full((32, 48, 3), 128, np.uint8)])
    out = tmp_path / "one.zarr"
    with pytest.raises(VideoError, match=r"one\.avi: 1 frame\(s\) selected .* at least 2"):
        extract_frames(video, out)
    assert_nothing_left(out)


def test_written_video_round_trip(tmp_path):
    video = tmp_path / "ramp.avi"
    write_video(video, [np.full((32, 48, 3), 20 * i, np.uint8) for i in range(5)], fps=7.0)
    attrs = extract_frames(video, tmp_path / "ramp.zarr", start=1)
    frames, _ = read_store(tmp_path / "ramp.zarr")
    assert frames.shape == (4, 32, 48, 3) and attrs["fps"] == pytest.approx(7.0)
    assert np.abs(frames[:, 16, 24].astype(int).mean(axis=1) - [20, 40, 60, 80]).max() <= 3  # MJPG is lossy


def test_only_selected_range_is_read(shared, tmp_path, monkeypatch):
    """Decoding stops at `end` and only selected frames are converted (no whole-video pass)."""
    calls = {"decoded": 0, "converted": 0}
    real_open = av.open

    class CountingFrame:
        def __init__(self, frame):
            self.frame = frame

        def to_ndarray(self, *a, **kw):
            calls["converted"] += 1
            return self.frame.to_ndarray(*a, **kw)

        def __getattr__(self, name):
            return getattr(self.frame, name)

    class CountingContainer:
        def __init__(self, container):
            self.container = container

        def decode(self, *a, **kw):
            for frame in self.container.decode(*a, **kw):
                calls["decoded"] += 1
                yield CountingFrame(frame)

        def __getattr__(self, name):
            return getattr(self.container, name)

    monkeypatch.setattr(av, "open", lambda *a, **kw: CountingContainer(real_open(*a, **kw)))
    extract_frames(shared / "data/videos/vtest.avi", tmp_path / "v.zarr", start=10, end=20, stride=5, resize=64)
    assert calls == {"decoded": 20, "converted": 2}


def opencv_frames(path, count):
    """The first ``count`` frames as OpenCV decodes them (the decoder used before PyAV), RGB."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    for _ in range(count):
        ok, bgr = cap.read()
        assert ok
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(frames)


@pytest.mark.parametrize("name", ["tree.avi", "carphone_pristine.mp4"])  # the videos of config/samples.tsv
def test_pixels_equal_opencv_decoding(shared, tmp_path, name):
    # Stores made before the switch to PyAV, and every result downstream, stay valid.
    src = shared / "data/videos" / name
    extract_frames(src, tmp_path / "v.zarr", end=24)
    frames, _ = read_store(tmp_path / "v.zarr")
    np.testing.assert_array_equal(frames[:], opencv_frames(src, 24))


def test_tree_avi_gets_its_true_frame_count_and_a_warning(shared, tmp_path, caplog):
    src = shared / "data/videos/tree.avi"
    cap = cv2.VideoCapture(str(src))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 444  # what the header claims
    cap.release()
    with caplog.at_level(logging.WARNING, logger="motionrefine"):
        attrs = extract_frames(src, tmp_path / "t.zarr", resize=32)
    frames, _ = read_store(tmp_path / "t.zarr")
    assert frames.shape[0] == 68 and attrs["frame_indices"] == list(range(68))
    assert "tree.avi: container header says 444 frames, but the stream decodes to 68" in caplog.text
    # Timestamps come from the decoded frames: 68 frames spread over the 444 slots of 1/15 s.
    stamps = np.array(attrs["timestamps"])
    assert len(stamps) == 68 and stamps[0] == 0 and (np.diff(stamps) > 0).all()
    assert stamps[-1] == pytest.approx(443 / 15, abs=0.1)


def test_frame_timestamps_of_a_constant_rate_video(shared, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="motionrefine"):
        attrs = extract_frames(shared / "data/videos/carphone_pristine.mp4", tmp_path / "c.zarr", start=4, stride=3)
    assert len(attrs["frame_indices"]) == 39 and attrs["frame_indices"][-1] == 118
    np.testing.assert_allclose(attrs["timestamps"], np.array(attrs["frame_indices"]) * 1001 / 30000)
    assert "container header" not in caplog.text  # header (120) and stream agree


def write_lying_avi(path, frames, claimed):
    """An MJPG AVI of ``frames`` whose header claims ``claimed`` frames (avih dwTotalFrames and strh dwLength)."""
    write_video(path, frames)
    data = bytearray(path.read_bytes())
    avih, strh = data.find(b"avih"), data.find(b"strh")
    assert avih > 0 and strh > 0 and data[strh + 8:strh + 12] == b"vids"
    assert struct.unpack_from("<I", data, avih + 24)[0] == len(frames)  # the field we patch
    struct.pack_into("<I", data, avih + 24, claimed)  # chunk id + size, then 4 DWORDs
    struct.pack_into("<I", data, strh + 40, claimed)  # chunk id + size, then 8 DWORDs
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("claimed", [40, 5], ids=["header-overstates", "header-understates"])
def test_header_that_disagrees_with_content(tmp_path, caplog, claimed):
    rng = np.random.default_rng(0)
    frames = [np.full((32, 48, 3), 20 * i, np.uint8) + rng.integers(0, 8, (32, 48, 3), dtype=np.uint8) for i in range(12)]
    video = tmp_path / "lying.avi"
    write_lying_avi(video, frames, claimed)
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == claimed  # the header really lies
    cap.release()
    with caplog.at_level(logging.WARNING, logger="motionrefine"):
        attrs = extract_frames(video, tmp_path / "all.zarr")
    assert read_store(tmp_path / "all.zarr")[0].shape[0] == 12 and attrs["frame_indices"] == list(range(12))
    assert f"lying.avi: container header says {claimed} frames, but the stream decodes to 12; using 12" in caplog.text
    np.testing.assert_allclose(attrs["timestamps"], np.arange(12) / 10.0)
    # An explicit end is checked against the decoded frames, not the header.
    extract_frames(video, tmp_path / "twelve.zarr", end=12)
    out = tmp_path / "thirteen.zarr"
    with pytest.raises(VideoError, match=r"lying\.avi: video ends after 12 frames but end=13"):
        extract_frames(video, out, end=13)
    assert_nothing_left(out)


def test_corrupt_frame_mid_video(tmp_path):
    # Frame 3's JPEG bytes zeroed: the decoder refuses it. OpenCV stopped there silently (grab()
    # failed, 3 frames kept); now it is one error naming the frame, and no store.
    rng = np.random.default_rng(0)
    video = tmp_path / "corrupt.avi"
    write_video(video, [rng.integers(0, 255, (32, 48, 3), dtype=np.uint8) for _ in range(6)])
    data = bytearray(video.read_bytes())
    soi = [m.start() for m in re.finditer(b"\xff\xd8", data)]  # JPEG start-of-image of each frame
    assert len(soi) == 6
    data[soi[3]:soi[4] - 100] = bytes(soi[4] - 100 - soi[3])
    video.write_bytes(bytes(data))
    out = tmp_path / "c.zarr"
    with pytest.raises(VideoError, match=r"corrupt\.avi: frame 3 cannot be decoded \(corrupt or truncated video\)"):
        extract_frames(video, out)
    assert_nothing_left(out)


def test_overwrite_replaces_previous_store(shared, tmp_path):
    out = tmp_path / "t.zarr"
    extract_frames(shared / "data/videos/tree.avi", out, end=4, resize=32)
    extract_frames(shared / "data/videos/tree.avi", out, end=3, resize=32)
    assert read_store(out)[0].shape[0] == 3


@pytest.mark.parametrize("spec, expected", [("96x64", (96, 64)), ("128", None), ("", None), (None, None)])
def test_parse_resize(spec, expected):
    r = parse_resize(spec)
    if spec in ("", None):
        assert r is None
    elif expected:
        assert r.target(320, 240) == expected
    else:
        assert r.target(320, 240) == (171, 128) and r.target(240, 320) == (128, 171)


@pytest.mark.parametrize("spec", ["96by64", "0", "0x5", "-3"])
def test_parse_resize_rejects(spec):
    with pytest.raises(ValueError):
        parse_resize(spec)


def test_bad_range_and_missing_source(shared, tmp_path):
    with pytest.raises(VideoError, match="bad frame range"):
        extract_frames(shared / "data/videos/tree.avi", tmp_path / "x.zarr", start=5, end=5)
    with pytest.raises(VideoError, match=r"nope\.avi: no such video"):
        extract_frames(tmp_path / "nope.avi", tmp_path / "x.zarr")
