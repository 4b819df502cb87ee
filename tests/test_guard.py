"""The guard: label-free signals, the bootstrap interval and the keep/revert decision, per run,
per video and for a new clip."""

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import require_asset
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import atomic_group, sha256_file, write_array
from motionrefine.flow.guard import (Group, HoldOut, Rule, check_clip, guard_weights, pooled_verdict, score_models,
                                     video_choice, video_entry)
from motionrefine.flow.holdout import pair_split
from motionrefine.flow.inference import flow_stage
from motionrefine.flow.labels import aggregate_labels, make_flow_labels
from motionrefine.flow.verdict import change_interval
from motionrefine.models.checkpoint import load_raft, save_raft

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = SHARED / "weights" / "raft-small.pth"
FRAMES = SHARED / "data" / "frames" / "dog_run"
H, W = 96, 128
HOLD = HoldOut(block=16, every=3)  # many blocks on small frames (no training here to starve)


def test_holdout_blocks_cover_a_fifth_everywhere():
    m = HoldOut(block=16, every=5).mask(160, 320)
    assert abs(m.mean() - 0.2) < 0.01
    # every 80x80 region holds some held-back blocks, so any training crop is sampled
    for y in range(0, 160, 80):
        for x in range(0, 320, 80):
            assert m[y:y + 80, x:x + 80].mean() > 0.1


# ------------------------------------------------------------------ the bootstrap rule

def blocks(ratio, n=30, seed=0, spread=0.2):
    """Per block summed EPE of pretrained and refined: refined = ratio · pretrained, ± spread per block."""
    rng = np.random.default_rng(seed)
    pre = rng.uniform(50, 150, n)
    return pre, pre * ratio * (1 + rng.uniform(-spread, spread, n))


def test_interval_is_seeded_and_brackets_the_change():
    parts = [blocks(0.8)]
    a, b = change_interval(parts, Rule()), change_interval(parts, Rule())
    assert a == b  # deterministic
    lo, hi = a["interval_pct"]
    assert lo < a["change_pct"] < hi < 0 and a["blocks"] == 30
    assert math.isclose(a["change_pct"], 100 * (parts[0][1].sum() / parts[0][0].sum() - 1))
    other = change_interval(parts, Rule(seed=1))["interval_pct"]
    assert other != a["interval_pct"] and abs(other[0] - lo) < 3
    wide = change_interval(parts, Rule(confidence=0.99))["interval_pct"]
    assert wide[0] < lo and wide[1] > hi


@pytest.mark.parametrize("ratio, spread, margin, flag", [
    (0.8, 0.2, 0.0, "helped"), (1.3, 0.2, 0.0, "reverted"),
    (1.0, 0.6, 0.0, "not shown"),   # blocks that got better and blocks that got worse
    (0.9, 0.05, 0.3, "not shown"),  # better, but not by the margin
])
def test_flags_follow_the_interval(ratio, spread, margin, flag):
    pre, ref = blocks(ratio, spread=spread)
    entry = video_entry({"agreement_epe": 1.0}, {"agreement_epe": ratio}, [(pre, ref)], Rule(margin=margin))
    assert entry["flag"] == flag and entry["use"] == ("refined" if flag == "helped" else "pretrained")
    assert f"{entry['change_pct']:+.1f} %" in entry["reason"]
    verdict = pooled_verdict({"agreement_epe": 1.0}, {"agreement_epe": ratio}, [(pre, ref)], Rule(margin=margin))
    assert verdict["keep_refined"] == (flag == "helped") and verdict["interval_pct"] == entry["interval_pct"]


def test_too_few_blocks_or_no_pixels_show_nothing():
    few = change_interval([blocks(0.5, n=4)], Rule())
    assert few["blocks"] == 4 and all(math.isnan(x) for x in few["interval_pct"]) and few["change_pct"] < 0
    entry = video_entry({"agreement_epe": 1.0}, {"agreement_epe": 0.5}, [blocks(0.5, n=4)], Rule())
    assert entry["flag"] == "not shown" and "only 4 blocks" in entry["reason"]
    none = pooled_verdict({}, {}, [], Rule())
    assert none["keep_refined"] is False and none["blocks"] == 0 and "no verified label pixels" in none["reason"]
    with pytest.raises(MotionRefineError, match="confidence"):
        Rule(confidence=1.0)


# ------------------------------------------------------------------ signals per video (stand-in students)

class Fixed:
    """A stand-in student: the label plus an error of magnitude ``err`` (H, W) at each pixel."""

    def __init__(self, label_fw, label_bw, err_fw, err_bw):
        d = np.array([0.6, 0.8], np.float32)  # a unit vector: EPE = err exactly
        self.fw, self.bw = label_fw + err_fw[..., None] * d, label_bw + err_bw[..., None] * d

    def pairs(self, frames, backward=True):
        return self.fw[None], self.bw[None]


def scene(seed):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (2, H, W, 3), dtype=np.uint8)
    fw = np.full((H, W, 2), 1.5, np.float32)
    kf, kb = rng.random((H, W)) < 0.6, rng.random((H, W)) < 0.6
    s = pair_split(fw, kf, -fw, kb, HOLD)
    return Group(frames, fw, -fw, s.score_fw, s.score_bw, s.unit_fw, s.unit_bw)


def judge(video_errors):
    """guard.json's pooled verdict and video entries for stand-in students: video ->
    (pretrained error map, refined error map)."""
    per_video = {}
    for i, (video, (pre, ref)) in enumerate(video_errors.items()):
        g = scene(i)
        est = {"pretrained": Fixed(g.flow_fw, g.flow_bw, pre, pre), "refined": Fixed(g.flow_fw, g.flow_bw, ref, ref)}
        per_video[video] = score_models(est, [g], HOLD.n_cells(H, W))
    sig = {m: {"agreement_epe": float(np.mean([s.summary(m)["agreement_epe"] for s in per_video.values()]))}
           for m in ("pretrained", "refined")}
    verdict = pooled_verdict(sig["pretrained"], sig["refined"], [s.parts() for s in per_video.values()], Rule())
    verdict["videos"] = {v: video_entry(s.summary("pretrained"), s.summary("refined"), [s.parts()], Rule(),
                                        verdict["keep_refined"]) for v, s in per_video.items()}
    return verdict, per_video


def err_map(seed, scale):
    return (scale * np.random.default_rng(seed).uniform(0.5, 1.5, (H, W))).astype(np.float32)


CELLS = HOLD.cells(H, W)
MIXED = np.where(CELLS % 2 == 0, 0.5, 1.5).astype(np.float32)  # better in half the blocks, worse in the rest


def test_each_video_gets_its_own_interval_and_flag():
    pre = err_map(1, 0.4)
    verdict, per_video = judge({"better": (pre, err_map(2, 0.1)), "mixed": (pre, pre * MIXED)})
    assert verdict["keep_refined"] is True and verdict["flag"] == "helped"
    better, mixed = verdict["videos"]["better"], verdict["videos"]["mixed"]
    assert better["flag"] == "helped" and better["use"] == "refined" and better["interval_pct"][1] < 0
    assert mixed["flag"] == "not shown" and mixed["use"] == "pretrained"
    assert mixed["interval_pct"][0] < 0 < mixed["interval_pct"][1]
    # the signals are pixel means over the scored pixels, which are the blocks' pixels
    s = per_video["better"]
    assert s.summary("refined")["agreement_pixels"] == s.unit_count.sum() > 0
    np.testing.assert_allclose(s.summary("refined")["agreement_epe"], s.unit_err["refined"].sum() / s.unit_count.sum())
    assert better["pretrained"]["agreement_epe"] > better["refined"]["agreement_epe"]
    for entry in (better, mixed):
        assert set(entry) >= {"pretrained", "refined", "change_pct", "interval_pct", "flag", "use", "reason"}
        assert {"agreement_epe", "fb_consistent_rate", "photometric_error"} <= set(entry["refined"])
    assert video_choice(verdict, "better")["use"] == "refined" and video_choice(verdict, "mixed")["use"] == "pretrained"


def test_a_reverted_run_leaves_every_video_on_pretrained():
    pre = err_map(1, 0.4)
    verdict, _ = judge({"better": (pre, err_map(2, 0.3)), "worse": (pre, err_map(3, 1.2))})
    assert verdict["keep_refined"] is False and verdict["flag"] == "reverted"
    assert verdict["videos"]["worse"]["flag"] == "reverted"
    better = verdict["videos"]["better"]
    assert better["flag"] == "helped" and better["use"] == "pretrained"
    assert "pooled verdict reverted" in better["reason"]
    tampered = json.loads(json.dumps(verdict))
    tampered["videos"]["better"]["use"] = "refined"
    assert video_choice(tampered, "better")["use"] == "pretrained"
    with pytest.raises(MotionRefineError, match="no video 'other'"):
        video_choice(verdict, "other")
    disabled = video_choice({"enabled": False, "keep_refined": True, "videos": {}}, "any")
    assert disabled["use"] == "refined" and disabled["flag"] == "not judged"


# ------------------------------------------------------------------ the real student and checkpoint files

@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    for path in (WEIGHTS, FRAMES):
        require_asset(path)
    root = tmp_path_factory.mktemp("guard")
    paths = sorted(FRAMES.glob("*.jpg"))[:5]
    frames = np.stack([cv2.resize(cv2.imread(str(p))[..., ::-1], (96, 64), interpolation=cv2.INTER_AREA)
                       for p in paths])
    fpath, flow, lpath = (str(root / d / "dog_run.zarr") for d in ("frames", "flow", "labels"))
    with atomic_group(fpath) as g:
        write_array(g, "frames", np.ascontiguousarray(frames))
    flow_stage(fpath, flow, str(WEIGHTS), iters=12, progress=False, device="cpu")
    make_flow_labels(fpath, flow, lpath)
    index = root / "train.json"
    aggregate_labels([lpath], [fpath], str(index))
    # A "refined" model that is worse: the flow head's updates overshoot.
    model, _ = load_raft(WEIGHTS, "small")
    with torch.no_grad():
        model.update_block.flow_head.conv2.weight.mul_(2.5)
    worse = root / "worse.pth"
    save_raft(model, worse)
    return {"root": root, "frames": fpath, "labels": lpath, "index": index, "worse": str(worse)}


def run_guard(stores, trained, name, **kw):
    out = stores["root"] / name
    verdict = guard_weights(str(WEIGHTS), trained, stores["index"], str(out / "refined.pth"), str(out / "guard.json"),
                            iters=2, holdout=HoldOut(block=16, every=3), device="cpu", **kw)
    assert json.loads((out / "guard.json").read_text()) == json.loads(json.dumps(verdict))
    return verdict, out


def test_guard_reverts_a_worse_model_with_its_interval(stores):
    verdict, out = run_guard(stores, stores["worse"], "worse")
    assert verdict["keep_refined"] is False and verdict["kept_weights"] == "pretrained"
    assert verdict["weights_sha256"] == sha256_file(out / "refined.pth") == sha256_file(WEIGHTS)
    lo, hi = verdict["interval_pct"]
    assert 0 < lo <= verdict["change_pct"] <= hi and verdict["flag"] == "reverted" and verdict["blocks"] >= 5
    entry = verdict["videos"]["dog_run"]
    assert entry["flag"] == "reverted" and entry["interval_pct"] == verdict["interval_pct"]  # one video: the pool
    assert entry["refined"]["agreement_epe"] > entry["pretrained"]["agreement_epe"]
    assert verdict["signals"]["refined"]["agreement_pixels"] == entry["refined"]["agreement_pixels"] > 0
    assert video_choice(verdict, "dog_run")["use"] == "pretrained"
    assert verdict["holdout"] == {"block": 16, "every": 3, "band": 8} and verdict["bootstrap"]["resamples"] == 1000


def test_same_weights_show_no_change_and_a_disabled_guard_judges_nothing(stores):
    verdict, _ = run_guard(stores, str(WEIGHTS), "same")
    assert verdict["change_pct"] == 0 and verdict["interval_pct"] == [0, 0] and verdict["flag"] == "not shown"
    assert verdict["keep_refined"] is False
    off, out = run_guard(stores, stores["worse"], "off", enabled=False)
    assert off["keep_refined"] is True and off["signals"] == {} and off["enabled"] is False
    assert sha256_file(out / "refined.pth") == sha256_file(stores["worse"])
    assert off["videos"]["dog_run"]["flag"] == "not judged"
    assert video_choice(off, "dog_run")["use"] == "refined"


def test_check_clip_judges_a_new_clip_on_every_verified_pixel(stores):
    same = check_clip(stores["frames"], stores["labels"], str(WEIGHTS), str(WEIGHTS), iters=2, device="cpu")
    assert same["flag"] == "not shown" and same["change_pct"] == 0 and same["use"] == "pretrained"
    worse = check_clip(stores["frames"], stores["labels"], str(WEIGHTS), stores["worse"], iters=2, device="cpu")
    assert worse["flag"] == "reverted" and worse["use"] == "pretrained" and worse["pairs"] == 4
    assert worse["interval_pct"][0] > 0 and 5 <= worse["blocks"] <= HoldOut(block=16).n_cells(64, 96)
    # every verified pixel of both directions is scored, far more than the guard's held-back share
    import zarr

    lab = zarr.open_group(stores["labels"], mode="r")
    assert worse["refined"]["agreement_pixels"] == int(lab["keep"][:].sum() + lab["keep_bw"][:].sum())
    assert set(worse) >= {"pretrained", "refined", "change_pct", "interval_pct", "flag", "use", "reason"}


def test_check_clip_refuses_mismatched_inputs(stores, tmp_path):
    other = str(tmp_path / "other.zarr")
    with atomic_group(other) as g:
        write_array(g, "frames", np.zeros((5, 64, 96, 3), np.uint8))
    with pytest.raises(MotionRefineError, match="is not the frames store"):
        check_clip(other, stores["labels"], str(WEIGHTS), str(WEIGHTS), iters=2, device="cpu")
    with pytest.raises(MotionRefineError, match="labelled by checkpoint"):
        check_clip(stores["frames"], stores["labels"], stores["worse"], str(WEIGHTS), iters=2, device="cpu")
