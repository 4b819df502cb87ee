"""Deliverables without Snakemake: per-video model choice, source-resolution export, atomic writes."""

import json

import numpy as np
import pytest
import zarr

from conftest import SHARED, require_asset
from motionrefine.config.settings import DeliverySettings, FlowSettings
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import atomic_group, sha256_file, write_array
from motionrefine.deliver.package import choose_flow, delivered_flow, write_deliverable
from motionrefine.io.flow_formats import read_flo, read_npy_flow, rescale_flow
from motionrefine.io.video import extract_frames


def test_choice_follows_the_video_entry_and_the_pooled_verdict():
    entry = {"use": "refined", "flag": "helped", "reason": "better", "interval_pct": [-9.0, -2.0],
             "change_pct": -5.0, "pretrained": {"agreement_epe": 0.5}, "refined": {"agreement_epe": 0.47}}
    verdict = {"keep_refined": True, "reason": "pooled",
               "videos": {"a": {**entry, "use": "pretrained", "flag": "not shown", "interval_pct": [-3.0, float("nan")]},
                          "b": entry}}
    a = choose_flow(verdict, "a")
    assert a["use"] == "pretrained" and a["interval_pct"] == [-3.0, None]  # NaN as null: standard JSON
    assert choose_flow(verdict, "b") == entry
    # A pooled verdict that reverted leaves every video on the pretrained weights.
    assert choose_flow({**verdict, "keep_refined": False}, "b")["use"] == "pretrained"
    with pytest.raises(MotionRefineError, match="judged no video 'c'"):
        choose_flow(verdict, "c")
    # A clip check is a video entry itself.
    assert choose_flow(entry, "x")["flag"] == "helped"
    assert choose_flow(None, "x")["use"] == "pretrained"


@pytest.fixture
def stores(tmp_path):
    frames = tmp_path / "frames.zarr"
    # Every other source frame from 2, resized so that the two axes scale differently.
    extract_frames(require_asset(SHARED / "data/videos/tree.avi"), frames, start=2, end=10, stride=2, resize="96x64")
    rng = np.random.default_rng(0)
    flows = {}
    for name in ("pretrained", "refined"):
        path = tmp_path / f"{name}.zarr"
        with atomic_group(path) as g:
            write_array(g, "flow_fw", rng.normal(size=(3, 64, 96, 2)).astype(np.float32))
            write_array(g, "flow_bw", rng.normal(size=(3, 64, 96, 2)).astype(np.float32))
            g.attrs.update({"checkpoint_sha256": name * 2, "iters": 12, "delivery": {"use": name, "reason": "r"}})
        flows[name] = str(path)
    return str(frames), flows


def test_deliverable_at_source_resolution_names_files_by_source_frame(tmp_path, stores):
    frames, flows = stores
    out = tmp_path / "deliverables/tree"
    settings = DeliverySettings("source", ("flo", "npy"), (), False)
    meta = write_deliverable(out, "tree", frames, flows["refined"], settings)
    assert meta["frames"]["source_indices"] == [2, 4, 6, 8] and meta["frames"]["pairs"][0] == [2, 4]
    assert meta["resolution"]["scale"] == pytest.approx([320 / 96, 240 / 64])
    assert meta["flow"]["checkpoint_sha256"] == "refinedrefined" and meta["flow"]["model"] == "refined"
    assert json.loads((out / "meta.json").read_text()) == meta
    stored = np.asarray(zarr.open_group(flows["refined"], mode="r")["flow_bw"][1])
    for got in (read_flo(out / "flow/flo/bw_000004.flo"), read_npy_flow(out / "flow/npy/bw_000004.npy")):
        assert got.shape == (240, 320, 2)
        np.testing.assert_allclose(got, rescale_flow(stored, (320, 240)), atol=1e-5)
    # A constant field rescales to the same field times the scale factors.
    const = np.broadcast_to(np.array([1.0, 2.0], np.float32), (64, 96, 2))
    np.testing.assert_allclose(rescale_flow(const, (320, 240))[5, 7], [320 / 96, 2 * 240 / 64], rtol=1e-6)
    # The stored size on request.
    meta = write_deliverable(out, "tree", frames, flows["pretrained"], DeliverySettings("stored", ("flo",), (), False))
    assert read_flo(out / "flow/flo/fw_000002.flo").shape == (64, 96, 2) and meta["flow"]["model"] == "pretrained"


def test_a_failed_deliverable_leaves_nothing(tmp_path, stores):
    frames, flows = stores
    out = tmp_path / "deliverables/tree"
    with pytest.raises(MotionRefineError, match="unknown format 'bmp'"):
        write_deliverable(out, "tree", frames, flows["refined"], DeliverySettings("source", ("flo", "bmp"), (), False))
    assert not out.exists() and not list(out.parent.iterdir())
    with pytest.raises(MotionRefineError, match="'deliverables.resolution'"):
        write_deliverable(out, "tree", frames, flows["refined"], DeliverySettings("full", (), (), False))
    # A flow store that no delivery choice made (the plain flow rule's) is refused.
    with atomic_group(tmp_path / "plain.zarr") as g:
        write_array(g, "flow_fw", np.zeros((3, 64, 96, 2), np.float32))
    with pytest.raises(MotionRefineError, match="not a delivered flow store"):
        write_deliverable(out, "tree", frames, str(tmp_path / "plain.zarr"), DeliverySettings())


def test_delivered_flow_runs_only_the_chosen_weights(tmp_path, stores):
    frames, _ = stores
    raft = str(require_asset(SHARED / "weights/raft-small.pth"))
    settings = FlowSettings("small", 2, 2, None)
    verdict = {"keep_refined": True, "reason": "pooled", "enabled": True,
               "videos": {"tree": {"use": "pretrained", "flag": "not shown", "reason": "interval holds 0"}}}
    missing = str(tmp_path / "never-made.pth")  # not opened: the verdict hands the video the pretrained weights
    choice = delivered_flow(frames, str(tmp_path / "d.zarr"), "tree", verdict, raft, missing, settings)
    g = zarr.open_group(str(tmp_path / "d.zarr"), mode="r")
    assert choice["use"] == "pretrained" and g.attrs["delivery"] == choice
    assert g.attrs["checkpoint_sha256"] == sha256_file(raft)
    verdict["videos"]["tree"] = {"use": "refined", "flag": "helped", "reason": "better"}
    with pytest.raises(Exception, match="never-made"):
        delivered_flow(frames, str(tmp_path / "e.zarr"), "tree", verdict, raft, missing, settings)
