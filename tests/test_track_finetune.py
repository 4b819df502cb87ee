"""Tracker fine-tuning on pseudo-labels: clip augmentation moves the tracks with the pixels,
samples are chunked per window, and a tiny run writes checkpoints and resumes exactly."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch

from conftest import assert_curve_close
from motionrefine.track import finetune as tf
from motionrefine.track import samples as ts
from motionrefine.track.augment import augment_clip
from motionrefine.track.synthetic import procedural_texture
from motionrefine.flow.augment import AugmentConfig
from motionrefine.config.schema import job_log
from motionrefine.core.errors import MotionRefineError
from motionrefine.models.pips import Pips, save_pips
from motionrefine.core.store import atomic_group, open_group, write_array
from motionrefine.track.labels import write_track_labels

torch.set_num_threads(1)

S, T, H, W = 8, 10, 64, 80
U = np.array([1.5, 0.5])


def _moving_clip(n_tracks=12, seed=0):
    """A textured image translated by t·U in frame t (exact sub-pixel warp), and tracks on it."""
    rng = np.random.default_rng(seed)
    tex = procedural_texture(rng, H + 40, W + 40, "shapes")
    frames = np.stack([cv2.warpAffine(tex, np.float32([[1, 0, t * U[0] - 20], [0, 1, t * U[1] - 20]]), (W, H),
                                      flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
                       for t in range(T)])
    start = rng.uniform([4, 4], [W - 20, H - 10], (n_tracks, 2))
    tracks = start[None] + np.arange(T)[:, None, None] * U  # (T, N, 2)
    return frames, tracks.astype(np.float32)


def _bilinear(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    mx = xy[:, 0].astype(np.float32)[None]
    my = xy[:, 1].astype(np.float32)[None]
    return cv2.remap(img.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[0]


def test_augmentation_moves_tracks_with_the_pixels():
    frames, tracks = _moving_clip()
    frames, tracks = frames[:S], tracks[:S]
    geo = AugmentConfig(crop=(48, 64), brightness=0, contrast=0, saturation=0, hue=0, hflip_prob=1.0, vflip_prob=1.0)
    out = augment_clip(frames, tracks, np.random.default_rng(3), geo)
    assert out["hflip"] and out["vflip"]
    assert out["frames"].shape == (S, 48, 64, 3) and out["frames"].dtype == np.float32
    keep = out["keep"]
    assert keep.any() and out["tracks"].shape == (S, keep.sum(), 2)
    y0, x0 = out["crop_origin"]
    # every kept track starts inside the crop
    st = out["tracks"][0]
    assert (st >= 0).all() and (st[:, 0] <= 63).all() and (st[:, 1] <= 47).all()
    for t in range(S):
        inside = ((out["tracks"][t] >= 1).all(1) & (out["tracks"][t, :, 0] <= 62) & (out["tracks"][t, :, 1] <= 46))
        a = _bilinear(out["frames"][t], out["tracks"][t][inside])
        b = _bilinear(frames[t], tracks[t][keep][inside])
        np.testing.assert_allclose(a, b, atol=1e-3)
    # the same transform written out: flip then crop
    x = (W - 1) - tracks[..., 0] - x0
    y = (H - 1) - tracks[..., 1] - y0
    np.testing.assert_allclose(out["tracks"], np.stack([x, y], -1)[:, keep], atol=1e-5)


def test_clip_jitter_is_one_draw_for_all_frames_unless_asymmetric():
    frames, tracks = _moving_clip()
    clip = np.repeat(frames[:1], S, axis=0)  # identical frames stay identical under one jitter draw
    cfg = AugmentConfig(crop=(H, W), hflip_prob=0, vflip_prob=0, asymmetric_prob=0.0)
    out = augment_clip(clip, tracks[:S], np.random.default_rng(0), cfg)
    assert np.abs(out["frames"] - clip.astype(np.float32)).max() > 1  # jitter did something
    for t in range(1, S):
        np.testing.assert_allclose(out["frames"][t], out["frames"][0], atol=1e-4)
    np.testing.assert_allclose(out["tracks"], tracks[:S], atol=1e-6)  # colour only, no geometry
    asym = augment_clip(clip, tracks[:S], np.random.default_rng(0), AugmentConfig(
        crop=(H, W), hflip_prob=0, vflip_prob=0, asymmetric_prob=1.0))
    assert np.abs(asym["frames"][1] - asym["frames"][0]).max() > 1


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("trackft")
    frames, tracks = _moving_clip(n_tracks=20, seed=1)
    fpath = root / "frames" / "clip.zarr"
    with atomic_group(fpath) as g:
        write_array(g, "frames", frames)
    # labels for windows starting at 0 and 2: the exact tracks
    tr = np.concatenate([tracks[0:S].transpose(1, 0, 2), tracks[2:2 + S].transpose(1, 0, 2)])
    n = len(tr)
    labels = {"tracks": tr, "window_start": np.repeat(np.int32([0, 2]), n // 2),
              "speed": np.full(n, 1.6, np.float32), "speed_bin": np.ones(n, np.int8),
              "fb_dist": np.zeros(n, np.float32), "origin": np.zeros(n, np.int8),
              "hist_before": np.array([0, n, 0, 0]), "hist_after": np.array([0, n, 0, 0]),
              "window_starts": np.int32([0, 2])}
    lpath = root / "labels" / "clip.zarr"
    write_track_labels(labels, lpath, {"video": "clip"})
    torch.manual_seed(0)
    ckpt = root / "init.pth"
    save_pips(Pips("small"), ckpt)
    return fpath, lpath, ckpt


def test_samples_are_chunked_per_window(stores):
    fpath, lpath, _ = stores
    s = ts.load_track_samples([lpath], [fpath], tracks_per_sample=8, min_tracks=3)
    # 20 tracks per window -> chunks of 8, 8, 4 in each of the 2 windows
    assert sorted((x.window_start, len(x.rows)) for x in s) == [(0, 4), (0, 8), (0, 8), (2, 4), (2, 8), (2, 8)]
    assert len({r for x in s if x.window_start == 0 for r in x.rows}) == 20
    assert len(ts.load_track_samples([lpath], [fpath], tracks_per_sample=8, min_tracks=5)) == 4
    by_name = ts.load_track_samples([lpath], {"clip": fpath}, tracks_per_sample=8, min_tracks=3)
    assert len(by_name) == 6
    with pytest.raises(MotionRefineError):
        ts.load_track_samples([lpath], {"other": fpath})
    frames, tracks = ts.load_sample(s[0], {})
    assert frames.shape == (S, H, W, 3) and tracks.shape == (S, len(s[0].rows), 2)


TINY = dict(steps=2, grad_acc=2, tracks_per_sample=8, min_tracks=4, iters=2, checkpoint_every=1, keep_checkpoints=5,
            lr=1e-4, augment={"crop": [64, 72]})


# Loss curve (without the seconds column) of a tiny fixed-seed run, recorded on the CPU before the
# trainers shared one loop: any change of data, random draws or update shows here (within float noise).
PINNED_CURVE = [
    ["1", "27.3177", "5.87356", "21.4441", "12.4459", "0.0001"],
    ["2", "27.6408", "4.66115", "22.9796", "9.87745", "9.9994e-05"],
]


def test_tiny_track_finetune_writes_checkpoints_and_resumes(stores, tmp_path):
    fpath, lpath, ckpt = stores
    with job_log(tmp_path / "track.log"):  # as the rule runs it
        straight = tf.finetune_tracker({**TINY, "log_every": 1}, [lpath], [fpath], ckpt, tmp_path / "a")
    steps = re.findall(r"track fine-tuning step (\d+)/2 loss [-\d.e+]+ lr [-\d.e+]+ [\d.]+ s/step ETA \d+m\d\ds",
                       (tmp_path / "track.log").read_text())
    assert steps == ["1", "2"]
    assert straight["completed"] and straight["samples"] == 6
    ck = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())
    assert ck == ["step_000001.pt", "step_000002.pt"]
    rows = (tmp_path / "a" / "loss.tsv").read_text().strip().splitlines()
    assert rows[0].split("\t") == list(tf.TSV_COLUMNS) and len(rows) == 3
    assert_curve_close([r.split("\t")[:-1] for r in rows[1:]], PINNED_CURVE)
    assert all(float(r.split("\t")[3]) > 0 for r in rows[1:])  # the score-map loss is on
    init = torch.load(ckpt, weights_only=True)["model_state_dict"]
    final = torch.load(tmp_path / "a" / "final.pth", weights_only=True)["model_state_dict"]
    assert any(not torch.equal(init[k], final[k]) for k in init)

    part = tf.finetune_tracker(TINY, [lpath], [fpath], ckpt, tmp_path / "b", stop_at=1)
    assert not part["completed"] and not (tmp_path / "b" / "final.pth").exists()
    rest = tf.finetune_tracker(TINY, [lpath], [fpath], ckpt, tmp_path / "b")
    assert rest["resumed_from"] == 1 and rest["completed"]
    resumed = torch.load(tmp_path / "b" / "final.pth", weights_only=True)["model_state_dict"]
    for k in final:
        assert torch.equal(final[k], resumed[k]), k
    with pytest.raises(MotionRefineError, match="different run"):
        tf.finetune_tracker({**TINY, "lr": 2e-4}, [lpath], [fpath], ckpt, tmp_path / "b")



def test_holdout_splits_tracks_by_their_first_point(stores):
    from motionrefine.flow.guard import HoldOut

    fpath, lpath, _ = stores
    hold = HoldOut(block=16, every=2)
    counts: dict = {}
    train = ts.load_track_samples([lpath], [fpath], tracks_per_sample=64, min_tracks=1, holdout=hold, counts=counts)
    held = ts.load_track_samples([lpath], [fpath], tracks_per_sample=64, min_tracks=1, holdout=hold, held=True)
    tracks = np.asarray(open_group(lpath)["tracks"][:])
    mask = hold.mask(H, W)
    inside = {r for s in held for r in s.rows}
    outside = {r for s in train for r in s.rows}
    assert inside and outside and not inside & outside
    for r in range(len(tracks)):
        x, y = np.clip(np.round(tracks[r, 0]), 0, [W - 1, H - 1]).astype(int)
        assert mask[y, x] == (r in inside)
    # the rest started outside the blocks but came within the band of a scored track
    assert counts == {"held_tracks": len(inside), "train_tracks": len(outside),
                      "excluded_tracks": len(tracks) - len(inside) - len(outside)}


# --------------------------------------------------------------------------- the guard's split cannot leak

def _closest_train_to_held(tracks, ws, roles):
    """Per video frame, the smallest distance between a trained-on and a scored position (inf: none)."""
    from motionrefine.track.holdout import HELD, TRAIN

    out = {}
    for f in range(int(ws.min()), int(ws.max()) + tracks.shape[1]):
        on = (ws <= f) & (f < ws + tracks.shape[1])
        tr, he = np.flatnonzero(on & (roles == TRAIN)), np.flatnonzero(on & (roles == HELD))
        if len(tr) and len(he):
            d = np.linalg.norm(tracks[tr, f - ws[tr]][:, None] - tracks[he, f - ws[he]][None], axis=-1)
            out[f] = float(d.min())
    return out


def test_guard_split_keeps_trained_and_scored_tracks_apart_at_every_frame(tmp_path):
    """Held blocks of HoldOut(16, 5) at 64x80 include x 0-15 / y 0-15, x 32-47 / y 16-31 and
    x 64-79 / y 32-47. Leak paths: D, a densified neighbour 2 px across a block edge from the
    scored A; C, which reaches A's position at frame 4; F, of the next (overlapping) window,
    which starts beside A's frame-4 position; B passes through a held block at frame 7, when no
    scored track is near."""
    from motionrefine.flow.guard import HoldOut
    from motionrefine.track.holdout import EXCLUDED, GUARD_BAND_PX, HELD, TRAIN, guard_roles

    s = np.arange(S, dtype=np.float64)[:, None]

    def path(x0, y0, vx, vy):
        return np.hstack([x0 + vx * s, y0 + vy * s])

    named = {  # name: (window start, track (S, 2))
        "A": (0, path(46, 24, 3, 0)), "D": (0, path(48, 24, 3, 0)), "C": (0, path(70, 10, -3, 3.5)),
        "B": (0, path(8, 40, 0, -4)), "E": (0, path(8, 8, 3, 0)), "G": (0, path(70, 56, 0.5, 0)),
        "F": (4, path(59, 25, 0, 0)), "H": (4, path(70, 40, 0, 0)),
    }
    names = list(named)
    tracks = np.stack([named[n][1] for n in names]).astype(np.float32)
    ws = np.array([named[n][0] for n in names], np.int64)
    hold = HoldOut(16, 5)
    roles = guard_roles(tracks, ws, hold, 64, 80)
    expected = {"A": HELD, "E": HELD, "H": HELD, "D": EXCLUDED, "C": EXCLUDED, "F": EXCLUDED, "B": TRAIN, "G": TRAIN}
    assert dict(zip(names, roles.tolist())) == expected
    closest = _closest_train_to_held(tracks, ws, roles)
    assert closest and min(closest.values()) > GUARD_BAND_PX
    # the old split (by the first point only) trained on all of them: positions 2 px from scored ones
    naive = np.where(roles == HELD, HELD, TRAIN).astype(np.int8)
    assert min(_closest_train_to_held(tracks, ws, naive).values()) <= 2.0
    # the same split through the samples: excluded tracks are neither trained on nor scored
    fpath, lpath = tmp_path / "frames.zarr", tmp_path / "labels.zarr"
    with atomic_group(fpath) as g:
        write_array(g, "frames", np.zeros((12, 64, 80, 3), np.uint8))
    n = len(tracks)
    write_track_labels({"tracks": tracks, "window_start": ws.astype(np.int32), "speed": np.ones(n, np.float32),
                        "speed_bin": np.ones(n, np.int8), "fb_dist": np.zeros(n, np.float32),
                        "origin": np.zeros(n, np.int8), "hist_before": np.array([0, n]),
                        "hist_after": np.array([0, n]), "window_starts": np.int32([0, 4])}, lpath, {"video": "v"})
    counts: dict = {}
    train = ts.load_track_samples([lpath], [fpath], 64, 1, holdout=hold, counts=counts)
    held = ts.load_track_samples([lpath], [fpath], 64, 1, holdout=hold, held=True)
    assert {names[r] for x in train for r in x.rows} == {"B", "G"}
    assert {names[r] for x in held for r in x.rows} == {"A", "E", "H"}
    assert counts == {"held_tracks": 3, "excluded_tracks": 3, "train_tracks": 2}
    # labels whose every unscored track comes near a scored one: one clear error naming the guard
    only = tmp_path / "near.zarr"
    keep = [names.index("A"), names.index("D")]
    write_track_labels({"tracks": tracks[keep], "window_start": ws[keep].astype(np.int32),
                        "speed": np.ones(2, np.float32), "speed_bin": np.ones(2, np.int8),
                        "fb_dist": np.zeros(2, np.float32), "origin": np.zeros(2, np.int8),
                        "hist_before": np.array([0, 2]), "hist_after": np.array([0, 2]),
                        "window_starts": np.int32([0])}, only, {"video": "v"})
    with pytest.raises(MotionRefineError, match=r"guard's split \(1 tracks held back, 1 within 8 px"):
        tf.finetune_tracker({"size": "flow-small", "min_tracks": 1}, [only], [fpath], tmp_path / "none.pth",
                            tmp_path / "work")
    bad = tracks.copy()
    bad[1, 3, 0] = np.nan
    with pytest.raises(MotionRefineError, match="non-finite"):
        guard_roles(bad, ws, hold, 64, 80)


def test_within_band_is_exact():
    from motionrefine.track.holdout import within_band

    rng = np.random.default_rng(3)
    pts = rng.uniform(-20, 120, (400, 2))
    centres = rng.uniform(-20, 120, (60, 2))
    centres[0] = pts[0] + [8.0, 0.0]  # exactly on the band: within
    centres[1] = pts[1] + [0.0, -8.001]  # just beyond it
    brute = (np.linalg.norm(pts[:, None] - centres[None], axis=-1) <= 8.0).any(axis=1)
    got = within_band(pts, centres, 8.0)
    assert got.tolist() == brute.tolist() and got[0] and 0 < got.sum() < len(pts)
    assert not within_band(pts[:0], centres, 8.0).size and not within_band(pts, centres[:0], 8.0).any()
