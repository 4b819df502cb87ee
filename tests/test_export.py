"""Flow export to the formats other tools read, and flow from a refined checkpoint."""

from pathlib import Path

import numpy as np
import pytest

from motionrefine.core.errors import MotionRefineError
from motionrefine.io.flow_formats import export_flow_store, read_flo, read_npy_flow
from motionrefine.core.store import atomic_group, write_array


def _store(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    fw = rng.normal(size=(3, 5, 7, 2)).astype(np.float32)
    bw = -fw
    with atomic_group(path) as g:
        write_array(g, "flow_fw", fw)
        write_array(g, "flow_bw", bw)
    return fw, bw


@pytest.mark.parametrize("fmt,reader", [("flo", read_flo), ("npy", read_npy_flow)])
def test_export_round_trips_every_pair_and_direction(tmp_path, fmt, reader):
    fw, bw = _store(tmp_path / "flow.zarr")
    out = tmp_path / f"video.{fmt}"
    assert export_flow_store(tmp_path / "flow.zarr", out, fmt) == 6
    assert sorted(p.name for p in out.iterdir()) == [f"{d}_{t:06d}.{fmt}" for d in ("bw", "fw") for t in range(3)]
    for t in range(3):
        np.testing.assert_array_equal(reader(out / f"fw_{t:06d}.{fmt}"), fw[t])
        np.testing.assert_array_equal(reader(out / f"bw_{t:06d}.{fmt}"), bw[t])


def test_export_rejects_unknown_format_and_leaves_nothing(tmp_path):
    _store(tmp_path / "flow.zarr")
    with pytest.raises(MotionRefineError, match="unknown export format"):
        export_flow_store(tmp_path / "flow.zarr", tmp_path / "video.png", "png")
    assert not (tmp_path / "video.png").exists()


# --------------------------------------------------------------------------- flow: OpenCV and KITTI


def test_flo_export_reads_back_with_opencv(tmp_path):
    import cv2

    fw, bw = _store(tmp_path / "flow.zarr")
    export_flow_store(tmp_path / "flow.zarr", tmp_path / "video.flo", "flo")
    for t in range(3):
        np.testing.assert_array_equal(cv2.readOpticalFlow(str(tmp_path / f"video.flo/fw_{t:06d}.flo")), fw[t])
        np.testing.assert_array_equal(cv2.readOpticalFlow(str(tmp_path / f"video.flo/bw_{t:06d}.flo")), bw[t])


def test_kitti_png_export_reads_back_within_a_64th_of_a_pixel(tmp_path):
    from motionrefine.io.flow_formats import read_kitti_flow

    fw, bw = _store(tmp_path / "flow.zarr")
    with atomic_group(tmp_path / "fast.zarr") as g:
        big = fw * 50.0
        big[0, 0, 0] = (600.0, 0.0)  # beyond KITTI's +-512 px: written invalid, not clipped
        write_array(g, "flow_fw", big)
        write_array(g, "flow_bw", bw)
    assert export_flow_store(tmp_path / "fast.zarr", tmp_path / "video.kitti-png", "kitti-png") == 6
    out = tmp_path / "video.kitti-png"
    assert sorted(p.name for p in out.iterdir()) == [f"{d}_{t:06d}.png" for d in ("bw", "fw") for t in range(3)]
    for t in range(3):
        flow, valid = read_kitti_flow(out / f"fw_{t:06d}.png")
        expect_valid = np.ones(valid.shape, bool)
        if t == 0:
            expect_valid[0, 0] = False
        np.testing.assert_array_equal(valid, expect_valid)
        assert np.abs(flow[valid] - big[t][valid]).max() <= 1 / 64
        flow, valid = read_kitti_flow(out / f"bw_{t:06d}.png")
        assert valid.all() and np.abs(flow - bw[t]).max() <= 1 / 64


# --------------------------------------------------------------------------- tracks: CSV and TAP-Vid pickle


@pytest.fixture(scope="module")
def track_stores(tmp_path_factory):
    """A frames store, a pseudo-label store and a predictions store of one small video (random tracker)."""
    import torch

    from motionrefine.models.pips import Pips, save_pips
    from motionrefine.track.labels import make_track_labels
    from motionrefine.track.queries import track_queries

    root = tmp_path_factory.mktemp("tracks")
    torch.manual_seed(0)
    save_pips(Pips("small"), root / "pips.pth")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (10, 64, 72, 3), dtype=np.uint8)  # small PIPs needs >= 64 px
    with atomic_group(root / "vid.zarr") as g:
        write_array(g, "frames", frames)
    # A huge θ keeps every tracked point of the random tracker (the layout is under test, not accuracy).
    make_track_labels(root / "vid.zarr", root / "pips.pth", root / "labels.zarr", grid_spacing=24, theta=1e6,
                      dense_w=2, max_dense_seeds=2, rebalance="none", iters=2)
    n = track_queries(root / "vid.zarr", root / "pips.pth", root / "predicted.zarr", size="small", iters=2,
                      label_options={"grid_spacing": 24}, device="cpu")
    return {"root": root, "frames": frames, "n_predicted": n}


def test_predictions_store_tracks_a_frame0_grid_through_the_video(track_stores):
    from motionrefine.core.store import open_group

    g = open_group(track_stores["root"] / "predicted.zarr")
    tracks, visible, queries = g["tracks"][...], g["visible"][...], g["queries"][...]
    n = track_stores["n_predicted"]
    assert n > 0 and tracks.shape == (n, 10, 2) and visible.shape == (n, 10)
    np.testing.assert_allclose(tracks[:, 0], queries[:, 1:], atol=1e-4)  # starts at its query
    assert (queries[:, 0] == 0).all() and visible[:, 0].all() and np.isfinite(tracks).all()
    assert g.attrs["kind"] == "track_predictions" and len(g.attrs["checkpoint_sha256"]) == 64


@pytest.mark.parametrize("source", ["labels", "predicted"])
def test_tracks_csv_has_one_row_per_point(track_stores, source, tmp_path):
    import pandas as pd

    from motionrefine.io.track_formats import export_track_store, read_track_store

    root = track_stores["root"]
    n = export_track_store(root / f"{source}.zarr", root / "vid.zarr", tmp_path / "t.csv", "csv", name="vid")
    df = pd.read_csv(tmp_path / "t.csv")
    assert list(df.columns) == ["track", "frame", "x", "y", "visible"]
    tracks, visible = read_track_store(root / f"{source}.zarr")
    assert len(tracks) == n
    if source == "labels":
        from motionrefine.track.labels import read_track_labels

        lab = read_track_labels(root / "labels.zarr")
        S = lab["tracks"].shape[1]
        assert len(df) == n * S and (df["visible"] == 1).all()  # S frames a track, all visible
        first = df[df["track"] == 0].sort_values("frame")
        assert first["frame"].tolist() == list(range(lab["window_start"][0], lab["window_start"][0] + S))
        np.testing.assert_allclose(first[["x", "y"]].to_numpy(), lab["tracks"][0], atol=1e-4)
    else:
        assert len(df) == n * 10  # every frame of the video
        assert df["visible"].sum() == visible.sum()
    row = df.iloc[len(df) // 2]
    np.testing.assert_allclose(tracks[int(row["track"]), int(row["frame"])], row[["x", "y"]].to_numpy(float),
                               atol=1e-4)


@pytest.mark.parametrize("source", ["labels", "predicted"])
def test_tapvid_pickle_loads_with_the_projects_reader(track_stores, source, tmp_path):
    from motionrefine.io.readers import read_tapvid
    from motionrefine.io.track_formats import export_track_store, read_track_store

    root = track_stores["root"]
    export_track_store(root / f"{source}.zarr", root / "vid.zarr", tmp_path / "t.pkl", "tapvid", name="vid")
    (scene,) = read_tapvid(tmp_path / "t.pkl", query_mode="first", resolution=None, pixel_convention="centre")
    tracks, visible = read_track_store(root / f"{source}.zarr")
    np.testing.assert_array_equal(scene.frames, track_stores["frames"])
    src = scene.meta["track_index"]
    assert len(src) == visible.any(1).sum()  # every track with a visible point is a query
    # Same points where visible; occluded exactly where the store has no visible point.
    np.testing.assert_array_equal(~scene.occluded, visible[src])
    vis = visible[src]
    np.testing.assert_allclose(scene.tracks[vis], tracks[src][vis], atol=1e-3)
    assert (scene.query_frame == np.argmax(vis, axis=1)).all()


def test_track_export_rejects_unknown_format_and_a_flow_store(track_stores, tmp_path):
    from motionrefine.io.track_formats import export_track_store

    root = track_stores["root"]
    with pytest.raises(MotionRefineError, match="unknown track export format"):
        export_track_store(root / "labels.zarr", root / "vid.zarr", tmp_path / "t.json", "json", name="vid")
    _store(tmp_path / "flow.zarr")
    with pytest.raises(MotionRefineError, match="not a tracking store"):
        export_track_store(tmp_path / "flow.zarr", root / "vid.zarr", tmp_path / "t.csv", "csv", name="vid")
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "t.csv").exists()
