"""FlowPips: the tracker on the frozen RAFT-small, its verification teachers and its fine-tuning."""
from __future__ import annotations

import glob

import cv2
import numpy as np
import pytest
import torch

from conftest import ROOT, SHARED, require_asset
from motionrefine.models.checkpoint import read_state_dict
from motionrefine.models.pips.flowpips import FlowPips, load_flowpips
from motionrefine.track.chain import ChainedFlowClip, chain_flow_tracks, verify_tracks
from motionrefine.track.samples import TrackSample
from motionrefine.track.window_loss import WindowInputs, flowpips_track_loss

RAFT = SHARED / "weights/raft-small.pth"
CHECKPOINT = ROOT / "weights/flowpips-small-synth.pth"


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    files = sorted(glob.glob(str(require_asset(SHARED / "data/frames/dog_run") / "*.jpg")))
    bgr = cv2.imread(files[0], cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[..., ::-1])


def translating(texture: np.ndarray, velocity, frames: int = 10, size=(72, 112)) -> np.ndarray:
    """A crop of a real image whose content moves by −``velocity`` px/frame (bilinear, sub-pixel)."""
    h, w = size
    out = []
    for t in range(frames):  # frame t shows the image at offset (300, 150) + velocity·t
        m = np.float32([[1, 0, -(300 + velocity[0] * t)], [0, 1, -(150 + velocity[1] * t)]])
        out.append(cv2.warpAffine(texture, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


@pytest.fixture(scope="module")
def trained() -> FlowPips:
    model, _ = load_flowpips(require_asset(CHECKPOINT), require_asset(RAFT))
    return model


def test_encoder_weights_equal_raft_small(trained):
    raft, _ = read_state_dict(require_asset(RAFT))
    fnet = {k.removeprefix("module."): v for k, v in raft.items() if k.removeprefix("module.").startswith("fnet.")}
    own = {f"fnet.{k}": v for k, v in trained.raft.fnet.state_dict().items()}
    assert own.keys() == fnet.keys() and len(own) > 10
    for k, v in fnet.items():
        assert torch.equal(own[k], v), k
    # the whole frozen RAFT, not only its encoder, is raft-small.pth's
    full = {k.removeprefix("module."): v for k, v in raft.items()}
    assert all(torch.equal(trained.raft.state_dict()[k], v) for k, v in full.items())
    assert not any(p.requires_grad for p in trained.raft.parameters())


def test_untrained_tracker_is_chained_raft(texture):
    model = FlowPips.from_raft(require_asset(RAFT))
    frames = translating(texture, (1.3, -0.7), frames=9)
    q = np.array([[0, 30.0, 30.0], [0, 60.5, 20.25], [4, 50.0, 40.0], [8, 10.0, 60.0]])
    tr, logits = model.track(frames, q)
    fw, bw, _, _ = model.flow_and_features(frames)
    ref, occ = chain_flow_tracks(fw.numpy(), bw.numpy(), q, alpha=model.cfg.fb_alpha, beta=model.cfg.fb_beta)
    np.testing.assert_allclose(tr, ref, atol=1e-4)
    assert np.array_equal(logits < 0, occ)


def test_flow_and_features_in_small_chunks_equal_one_pass(texture):
    # HD footage: frames are encoded a few at a time and pairs cut to the correlation budget.
    model = FlowPips.from_raft(require_asset(RAFT))
    frames = translating(texture, (1.3, -0.7), frames=6)
    whole = model.flow_and_features(frames)
    cells = whole[2].shape[-2] * whole[2].shape[-1]
    small = model.flow_and_features(frames, chunk=2, max_corr_bytes=2 * 4 * cells * cells)  # one pair at a time
    for a, b in zip(whole[:3], small[:3]):
        assert a.shape == b.shape
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)
    assert whole[3] == small[3]


def test_translating_sequence_tracked_within_half_pixel(trained, texture):
    v = np.array([2.0, -1.0])
    # two chained windows forward, one backward (RAFT-small drifts by ~0.1 px/frame on frames much smaller)
    frames = translating(texture, v, frames=12, size=(144, 256))
    pts = np.array([[60.0, 50.0], [120.0, 70.0], [180.0, 60.0], [100.0, 100.0]])
    q = np.concatenate([np.array([[0], [0], [5], [5]], float), pts], axis=1)
    tr, logits = trained.track(frames, q)
    t = np.arange(len(frames))
    gt = pts[:, None, :] - (t[None, :, None] - q[:, :1, None]) * v  # content moves by -v in the crop
    err = np.linalg.norm(tr - gt, axis=-1)
    assert err.max() < 0.5, err.max()
    assert (logits > 0).all()


def test_point_leaving_the_frame_is_not_visible(trained, texture):
    """TAP-Vid counts a point outside the frame as occluded; the head was never taught that
    (visibility is supervised inside the frame only), so tracking flags it by position."""
    v = np.array([4.0, 0.0])
    frames = translating(texture, v, frames=9, size=(72, 112))  # content moves 4 px/frame to the left
    q = np.array([[0, 10.0, 36.0], [0, 90.0, 36.0]])  # the first leaves the frame after frame 2
    tr, logits = trained.track(frames, q)
    outside = tr[..., 0] < 0
    assert outside[0].sum() >= 5 and not outside[1].any()
    assert np.isneginf(logits[outside]).all() and (logits[1] > 0).all()


def test_verification_rejects_a_track_that_does_not_return():
    S, H, W = 8, 40, 60
    fw = np.zeros((S - 1, H, W, 2)); fw[..., 0] = 2.0
    bw = np.zeros((S - 1, H, W, 2)); bw[..., 0] = -2.0
    bw[3, 20:, 16:21] = 0.0  # the return flow from frame 4 to 3 fails in this block
    clip = ChainedFlowClip(fw, bw, (H, W))
    q = np.array([[10.0, 10.0], [10.0, 30.0]], np.float32)  # the second passes through the block
    tracks, keep, dist = verify_tracks(clip, np.zeros((S, H, W, 3), np.uint8), q, theta=1.0)
    assert keep.tolist() == [True, False]
    assert dist[0] < 1e-6 and dist[1] >= 2.0
    np.testing.assert_allclose(tracks[0, :, 0], 10 + 2 * np.arange(S))


def test_finetune_loss_falls_on_a_fixed_batch(texture):
    model, _ = load_flowpips(require_asset(CHECKPOINT), require_asset(RAFT))
    model.train()
    v = np.array([1.0, 0.5])
    frames = translating(texture, v, frames=8)
    inputs = WindowInputs(model)
    inputs.videos[("clip", None)] = model.flow_and_features(frames) + (frames.shape[1:3],)
    pts = np.stack(np.meshgrid(np.arange(20, 90, 10.0), np.arange(20, 60, 10.0)), -1).reshape(-1, 2)
    labels = pts[None] - np.arange(8)[:, None, None] * v
    labels[1:] += 1.0  # labels off the chained flow by 1 px: the update must learn to move
    sample = TrackSample("labels", "clip", 0, tuple(range(len(pts))))
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        loss, _ = flowpips_track_loss(model, inputs, sample, labels, gamma=0.8)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_checkpoint_holds_the_tracker_only_and_names_its_raft(tmp_path):
    from motionrefine.core.errors import CheckpointError
    from motionrefine.core.store import sha256_file
    from motionrefine.models.pips.flowpips import save_flowpips

    raft = require_asset(RAFT)
    model = FlowPips.from_raft(raft)
    with torch.no_grad():
        model.mixer.head.bias.fill_(0.25)  # something to round-trip
    save_flowpips(model, tmp_path / "t.pth")
    obj = torch.load(tmp_path / "t.pth", weights_only=True)
    assert obj["raft_sha256"] == sha256_file(raft)
    assert set(obj["mixer_state_dict"]) == set(model.mixer.state_dict())  # no RAFT tensor in the file
    back, _ = load_flowpips(tmp_path / "t.pth", raft)
    assert torch.equal(back.mixer.head.bias, model.mixer.head.bias)
    # a RAFT file other than the one it was trained on is refused, naming both sha256
    state, _ = read_state_dict(raft)
    state["fnet.conv1.weight"] = state["fnet.conv1.weight"] + 1e-3
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=obj["raft_sha256"]):
        load_flowpips(tmp_path / "t.pth", tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="RAFT-small weights"):
        load_flowpips(tmp_path / "t.pth", None)
    # the shipped tracker is in this layout and runs on shared/'s raft-small.pth
    shipped = torch.load(require_asset(CHECKPOINT), weights_only=True)
    assert shipped["raft_sha256"] == obj["raft_sha256"] and "model_state_dict" not in shipped


def _exact_track_labels(texture, tmp_path, xs, ys) -> int:
    """A translating 8-frame clip (frames.zarr) and its exact tracks from an xs × ys grid as a
    label store (labels.zarr) in tmp_path. Returns the number of tracks."""
    from motionrefine.core.store import atomic_group, write_array
    from motionrefine.track.labels import write_track_labels

    v = np.array([1.5, -0.5])
    with atomic_group(tmp_path / "frames.zarr") as g:
        write_array(g, "frames", translating(texture, v, frames=8))
    pts = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    tracks = (pts[None] - np.arange(8)[:, None, None] * v).transpose(1, 0, 2)  # exact, (n, S, 2)
    n = len(tracks)
    write_track_labels({"tracks": tracks, "window_start": np.zeros(n, np.int32), "speed": np.ones(n, np.float32),
                        "speed_bin": np.ones(n, np.int8), "fb_dist": np.zeros(n, np.float32),
                        "origin": np.zeros(n, np.int8), "hist_before": np.array([0, n]),
                        "hist_after": np.array([0, n]), "window_starts": np.int32([0])},
                       tmp_path / "labels.zarr", {"video": "clip"})
    return n


def test_guard_keeps_the_update_closer_to_held_back_tracks(texture, tmp_path):
    from motionrefine.track import finetune as tf
    from motionrefine.track.guard import guard_update
    from motionrefine.track.samples import load_track_samples

    n = _exact_track_labels(texture, tmp_path, np.arange(20, 90, 10.0), np.arange(20, 60, 10.0))
    held = load_track_samples([tmp_path / "labels.zarr"], [tmp_path / "frames.zarr"], 64, 1)
    model = FlowPips.from_raft(require_asset(RAFT))
    clean = {k: x.clone() for k, x in model.mixer.state_dict().items()}
    bad = {k: x.clone() for k, x in clean.items()}
    bad["head.bias"][0] = 0.5  # every position pushed right: far from the exact tracks
    cfg = tf.TrackFinetuneConfig(size="flow-small", iters=3)
    inputs = WindowInputs(model)
    # fine-tuned update worse than the initial one: the initial is put back
    model.mixer.load_state_dict(bad)
    out = guard_update(cfg, model, clean, inputs, held, {})
    assert not out["keep_refined"] and out["held_epe_refined"] > out["held_epe_initial"] + 1.0
    assert torch.equal(model.mixer.head.bias, clean["head.bias"]) and out["held_tracks"] == n
    # fine-tuned update better: it stays
    out = guard_update(cfg, model, bad, inputs, held, {})
    assert out["keep_refined"] and out["held_epe_refined"] < 0.5
    assert torch.equal(model.mixer.head.bias, clean["head.bias"])
    # nothing held back (a clip whose few tracks all train): no gain shown, the initial update returns
    out = guard_update(cfg, model, bad, inputs, [], {})
    assert not out["keep_refined"] and out["held_tracks"] == 0
    assert torch.equal(model.mixer.head.bias, bad["head.bias"])


def test_finetune_summary_counts_the_guards_split(texture, tmp_path):
    """The guard's decision carries the split's counts: held (scored), excluded and train tracks."""
    from motionrefine.track.finetune import finetune_tracker

    n = _exact_track_labels(texture, tmp_path, np.arange(6, 106, 4.0), np.arange(6, 66, 4.0))
    cfg = dict(size="flow-small", steps=1, grad_acc=1, tracks_per_sample=64, min_tracks=1, iters=2, checkpoint_every=1,
               holdout_every=2)
    summary = finetune_tracker(cfg, [tmp_path / "labels.zarr"], [tmp_path / "frames.zarr"], require_asset(CHECKPOINT),
                               tmp_path / "work", raft_checkpoint=require_asset(RAFT))
    guard = summary["guard"]
    # a 4 px grid: every track next to a block edge is within 8 px of a scored one
    assert guard["held_tracks"] > 0 and guard["excluded_tracks"] > 0 and guard["train_tracks"] > 0
    assert guard["held_tracks"] + guard["excluded_tracks"] + guard["train_tracks"] == n
    assert summary["tracks"] == guard["train_tracks"] and guard["guard_band_px"] == 8.0
    assert isinstance(guard["keep_refined"], bool) and "held_epe_initial" in guard

