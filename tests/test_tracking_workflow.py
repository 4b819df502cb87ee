"""The tracking chain through Snakemake: track labels, tracker fine-tuning, the trackers' comparison."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from conftest import SHARED, require_asset
from motionrefine.core.errors import CheckpointError
from motionrefine.core.store import sha256_file
from motionrefine.models.pips.flowpips import load_flowpips

ROOT = Path(__file__).resolve().parents[1]
RAFT_SMALL = SHARED / "weights/raft-small.pth"
CONFIG = ROOT / "tests" / "data" / "tiny_tracking" / "config.yaml"


@pytest.mark.slow
def test_tracking_chain_end_to_end(tmp_path):
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(ROOT / "Snakefile"),
           "--workflow-profile", "none", "--cores", "2", "--directory", str(tmp_path),
           "--configfile", str(CONFIG), "--replace-workflow-config", "results/tracking/eval.csv"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for video in ("tree", "dog"):
        g = zarr.open_group(str(tmp_path / f"results/labels/tracks/{video}.zarr"), mode="r")
        tracks = g["tracks"][:]
        assert tracks.ndim == 3 and tracks.shape[1:] == (8, 2) and np.isfinite(tracks).all()
        assert g.attrs["checkpoint_sha256"] == "05f4e542170cc4db3e198a43769fb71d3e7e0abe72a1220a5ba6143d84af5170"
        # both teachers: the tracker itself and the chained teacher flow (index into teacher_names)
        assert g.attrs["teacher_names"] == ["tracker", "flow"] and set(g["teacher"][:]) <= {0, 1}
    # tracking.refined_raft (default): the refined tracker runs on the heldout flow refinement's RAFT
    backbone = tmp_path / "results/finetune/heldout/refined.pth"
    model, _ = load_flowpips(tmp_path / "results/tracking/finetune/refined.pth", backbone)
    assert model.raft_sha256 == sha256_file(backbone) and sum(p.numel() for p in model.trainable_parameters()) > 0
    if sha256_file(backbone) != sha256_file(require_asset(RAFT_SMALL)):  # the guard kept the refined flow
        with pytest.raises(CheckpointError, match="sha256"):
            load_flowpips(tmp_path / "results/tracking/finetune/refined.pth", require_asset(RAFT_SMALL))
    guard = json.loads((tmp_path / "results/tracking/finetune/guard.json").read_text())
    assert guard["weights_sha256"] == sha256_file(tmp_path / "results/tracking/finetune/refined.pth")
    assert guard["raft_sha256"] == model.raft_sha256 and isinstance(guard["keep_refined"], bool)
    if guard["held_tracks"]:  # the guard's decision follows its two held-back errors, and the report says it
        assert guard["excluded_tracks"] >= 0 and guard["train_tracks"] > 0 and guard["guard_band_px"] == 8.0
        assert guard["keep_refined"] == (guard["held_epe_refined"] < guard["held_epe_initial"])
        assert "Tracker guard: on" in (tmp_path / "results/tracking/summary.md").read_text()
    ev = pd.read_csv(tmp_path / "results/tracking/eval.csv")
    # refine.transductive is off in this config: no transductive trackers
    assert set(ev["tracker"]) == {"chained RAFT, pretrained", "chained RAFT, refined heldout",
                                  "chained RAFT + visibility, pretrained", "chained RAFT + visibility, refined heldout"}
    summary_md = (tmp_path / "results/tracking/summary.md").read_text()
    assert "| chained RAFT + visibility, refined heldout | chained RAFT + visibility, pretrained |" in summary_md
    assert "tracker (" not in summary_md
    # Chained RAFT "refined" uses the guard's choice, which may be the pretrained weights.
    kept = json.loads((tmp_path / "results/finetune/heldout/guard.json").read_text())["keep_refined"]
    assert set(ev["scene"]) == {"s0"} and ev["checkpoint_sha256"].nunique() == (4 if kept else 3)
    assert ev["delta_avg"].between(0, 1).all() and ev["survival"].between(0, 1).all()
    assert (tmp_path / "results/tracking/delta_avg.png").stat().st_size > 1000
    assert (tmp_path / "results/tracking/tracks.png").stat().st_size > 1000
    lq = pd.read_csv(tmp_path / "results/tracking/label_quality.csv")
    assert set(lq["teacher"]) <= {"tracker", "flow"} and len(lq) >= 1

    # Exports of the same run: the refined tracker's tracks and the pseudo-labels, read back.
    from motionrefine.io.readers import read_tapvid

    exports = ["results/export/tracks/predicted/tree.csv", "results/export/tracks/labels/dog.pkl"]
    proc = subprocess.run(cmd[:-1] + exports, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pred = zarr.open_group(str(tmp_path / "results/tracking/predict/tree.zarr"), mode="r")
    csv = pd.read_csv(tmp_path / exports[0])
    assert list(csv.columns) == ["track", "frame", "x", "y", "visible"]
    assert len(csv) == pred["tracks"].shape[0] * pred["tracks"].shape[1] and csv["visible"].sum() == pred["visible"][:].sum()
    (scene,) = read_tapvid(tmp_path / exports[1], resolution=None, pixel_convention="centre")
    labels = zarr.open_group(str(tmp_path / "results/labels/tracks/dog.zarr"), mode="r")
    assert scene.name == "dog" and len(scene.tracks) == labels["tracks"].shape[0]
    assert (~scene.occluded).sum(1).tolist() == [8] * len(scene.tracks)  # one 8-frame window each


def _davis_pickle(path: Path, t: int = 8) -> None:
    """A TAP-Vid DAVIS-layout pickle: a smooth texture translating 2 px/frame, exact tracks."""
    import pickle

    import cv2

    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (96, 160, 3), dtype=np.uint8), (0, 0), 2)
    video = np.stack([base[8:72, 4 + 2 * i: 100 + 2 * i] for i in range(t)])  # content moves left
    pts = np.array([[20.0, 20.0], [50.0, 30.0], [70.0, 40.0]])
    tracks = np.stack([pts - [2.0 * i, 0.0] for i in range(t)], axis=1)  # (N, T, 2) pixels
    points = tracks / np.array([96.0, 64.0])  # normalised [0, 1] by (width, height)
    with open(path, "wb") as f:
        pickle.dump({"slide": {"video": video, "points": points, "occluded": np.zeros((3, t), bool)}}, f)


def test_tracker_comparison_scores_tapvid_videos(tmp_path):
    from motionrefine.track.comparison import tracker_comparison

    _davis_pickle(tmp_path / "tapvid_davis.pkl")
    raft = ROOT.parent / "shared" / "weights" / "raft-small.pth"
    df = tracker_comparison([], {"raft": str(raft)}, {"tracker": str(ROOT / "weights" / "pips-small-synth.pth")},
                            "small", 2, 4, str(tmp_path / "eval.csv"), str(tmp_path / "fig.png"),
                            str(tmp_path / "summary.md"),
                            tapvid=[{"benchmark": "davis", "name": "slide", "path": str(tmp_path / "tapvid_davis.pkl")}],
                            raft_variant="small")
    assert sorted(df["tracker"]) == ["raft", "tracker"] and set(df["scene"]) == {"davis/slide"}
    # Pure translation of a textured image: chained RAFT tracks it within 1 px at 256x256 almost always.
    assert float(df[df["tracker"] == "raft"]["delta_avg"].iloc[0]) > 0.6
    assert "davis/slide" in (tmp_path / "eval.csv").read_text()


def test_comparison_names_say_the_flowpips_tracker_is_chained_raft_plus_visibility():
    """Rule track_eval's names: the FlowPips tracker's update outputs zero positions, so it is
    named for what it is; each refined entry is compared with its own pretrained one."""
    from motionrefine.core.errors import MotionRefineError
    from motionrefine.track.comparison import comparison_name, comparison_trackers

    kw = comparison_trackers("flow-small", "raft.pth", "raft-ref.pth", "trk.pth", "trk-ref.pth",
                             tracker_raft="raft.pth", tracker_refined_raft="raft-ref.pth", transductive={"s0": "s0.pth"},
                             tracker_transductive=True)
    cr, cv = "chained RAFT", "chained RAFT + visibility"
    assert kw["raft"] == {f"{cr}, pretrained": "raft.pth", f"{cr}, refined heldout": "raft-ref.pth",
                          f"{cr}, refined transductive": {"s0": "s0.pth"}}
    assert kw["pips"] == {f"{cv}, pretrained": "trk.pth", f"{cv}, refined heldout": "trk-ref.pth",
                          f"{cv}, refined transductive": "trk.pth"}
    assert kw["tracker_backbone"] == {f"{cv}, refined transductive": {"s0": "s0.pth"}}
    assert kw["tracker_raft"][f"{cv}, refined heldout"] == "raft-ref.pth"
    assert kw["gains"] == {f"{m}, refined {how}": f"{m}, pretrained" for m in (cr, cv)
                           for how in ("heldout", "transductive")}
    assert not any("tracker" in name for group in ("raft", "pips") for name in kw[group])
    # a PIPs tracker is a tracker of its own; no transductive scenes, no transductive rows
    pips = comparison_trackers("small", "r", "rr", "t", "tr")
    assert list(pips["pips"]) == ["PIPs, pretrained", "PIPs, refined heldout"] and pips["tracker_raft"] is None
    assert list(pips["raft"]) == [f"{cr}, pretrained", f"{cr}, refined heldout"]
    with pytest.raises(MotionRefineError, match="stage"):
        comparison_name(cv, "refined")


def test_transductive_trackers_run_per_scene_on_their_own_raft(tmp_path):
    """A {scene: weights} tracker runs only on the scenes it names, each on its own RAFT, and the
    summary gives its delta_avg change against the pretrained tracker per scene."""
    import pickle

    import torch

    from motionrefine.models.checkpoint import read_state_dict
    from motionrefine.track.comparison import tracker_comparison

    _davis_pickle(tmp_path / "one.pkl")
    with open(tmp_path / "one.pkl", "rb") as f:
        video = pickle.load(f)["slide"]
    with open(tmp_path / "tapvid_davis.pkl", "wb") as f:  # two videos: the second is the first reversed
        pickle.dump({"slide": video, "back": {**video, "video": video["video"][::-1].copy(),
                                              "points": video["points"][:, ::-1].copy()}}, f)
    raft = require_asset(RAFT_SMALL)
    state, _ = read_state_dict(raft)  # "refined on slide": RAFT-small with one weight changed
    state["fnet.conv1.weight"] = state["fnet.conv1.weight"] * 1.01
    torch.save(state, tmp_path / "refined.pth")
    refined = str(tmp_path / "refined.pth")
    tracker = str(ROOT / "weights" / "flowpips-small-synth.pth")
    out = {k: str(tmp_path / f) for k, f in (("out_table", "eval.csv"), ("out_figure", "fig.png"),
                                             ("out_summary", "summary.md"))}
    df = tracker_comparison(
        [], {"raft (pretrained)": str(raft), "raft (transductive)": {"davis/slide": refined}},
        {"tracker (pretrained)": tracker, "tracker (transductive)": {"davis/slide": tracker}}, "flow-small", 1, 4,
        tapvid=[{"benchmark": "davis", "name": n, "path": str(tmp_path / "tapvid_davis.pkl")} for n in ("slide", "back")],
        raft_variant="small", tracker_raft={"tracker (pretrained)": str(raft), "tracker (transductive)": str(raft)},
        tracker_backbone={"tracker (transductive)": {"davis/slide": refined}},
        gains={"tracker (transductive)": "tracker (pretrained)"}, **out)
    scenes = df.groupby("tracker")["scene"].apply(set).to_dict()
    assert scenes["raft (pretrained)"] == scenes["tracker (pretrained)"] == {"davis/slide", "davis/back"}
    assert scenes["raft (transductive)"] == scenes["tracker (transductive)"] == {"davis/slide"}
    rows = df.set_index(["tracker", "scene"])
    assert rows.loc[("tracker (transductive)", "davis/slide"), "raft_sha256"] == sha256_file(refined)
    assert rows.loc[("tracker (pretrained)", "davis/slide"), "raft_sha256"] == sha256_file(raft)
    assert rows.loc[("raft (transductive)", "davis/slide"), "checkpoint_sha256"] == sha256_file(refined)
    change = rows.loc[("tracker (transductive)", "davis/slide"), "delta_avg"] - rows.loc[
        ("tracker (pretrained)", "davis/slide"), "delta_avg"]
    summary = (tmp_path / "summary.md").read_text()
    assert f"| tracker (transductive) | tracker (pretrained) | {100 * change:+.1f} | {100 * change:+.1f} |" in summary
    assert "| raft (transductive) | 1 |" in summary  # the means say over how many scenes


@pytest.mark.parametrize("transductive", [False, True])
def test_tapvid_benchmark_is_scheduled_for_tracking_only(tmp_path, transductive):
    """A TAP-Vid video is scored by the tracking comparison; with refine.transductive the flow is
    refined on its own frames for it (frames, labels, fine-tune, guard), never flow-evaluated."""
    import yaml

    from dryrun import dry_run_jobs

    _davis_pickle(tmp_path / "tapvid_davis.pkl")
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["benchmarks"]["davis"] = {"kind": "tapvid", "path": str(tmp_path / "tapvid_davis.pkl"), "scenes": ["slide"]}
    cfg["refine"]["transductive"] = transductive
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(ROOT / "Snakefile"),
           "--workflow-profile", "none", "--cores", "1", "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "cfg.yaml"), "--replace-workflow-config"]
    proc = subprocess.run(cmd + ["-n", "results/tracking/eval.csv"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "tapvid_davis.pkl" in proc.stdout  # an input of track_eval
    jobs = dry_run_jobs(proc.stdout)
    track_eval = proc.stdout[proc.stdout.index("rule track_eval:"):].split("output:")[0]
    if not transductive:
        assert "davis__slide" not in proc.stdout  # no frames/flow/labels jobs for it
        assert "results/finetune/tinytex__s0" not in track_eval
        return
    for run in ("tinytex__s0", "davis__slide"):  # each scene's own refined RAFT goes to track_eval
        assert ("guard", f"results/finetune/{run}/refined.pth") in jobs
        assert f"results/finetune/{run}/refined.pth" in track_eval
    assert ("scene_frames", "results/frames/davis__slide.zarr") in jobs
    assert ("labels", "results/labels/flow/davis__slide.zarr") in jobs
    assert not [j for j in jobs if j[0] == "evaluate" and "davis" in j[1]]  # no flow ground truth
    # its frames store holds the video as the tracking comparison reads it
    proc = subprocess.run(cmd + ["results/frames/davis__slide.zarr"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    from motionrefine.io.readers import read_tapvid

    (scene,) = read_tapvid(tmp_path / "tapvid_davis.pkl", videos=["slide"])
    stored = zarr.open_group(str(tmp_path / "results/frames/davis__slide.zarr"), mode="r")
    assert np.array_equal(stored["frames"][:], scene.frames)
