"""The hold-out cannot leak: what fine-tuning trains on and what the guard scores are far apart
in both frames of a pair, after warping each label to its target."""

import numpy as np
import pytest

from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import atomic_group, write_array
from motionrefine.flow.finetune_config import FinetuneConfig
from motionrefine.flow.guard import training_groups
from motionrefine.flow.holdout import HoldOut, all_units, dilate, pair_split
from motionrefine.flow.pairs import PairDataset
from motionrefine.flow.trainset import aggregate_labels, fingerprint, load_training_pairs

H, W, T = 64, 96, 3


def large_motion(seed=0):
    """Labels of T-1 pairs whose motion (~20 px right, ±6 px vertically) carries most held
    pixels out of their 16-px block; the backward labels only roughly invert the forward ones."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    fw = np.stack([20 + 4 * np.sin(yy / 9), 6 * np.cos(xx / 11)], -1)
    fw = np.repeat(fw[None], T - 1, 0) + rng.normal(0, 0.3, (T - 1, H, W, 2)).astype(np.float32)
    bw = -fw + rng.normal(0, 0.7, fw.shape).astype(np.float32)

    def keep(flow):
        tx, ty = xx + flow[..., 0], yy + flow[..., 1]
        return (tx >= 0) & (tx <= W - 1) & (ty >= 0) & (ty <= H - 1) & (rng.random(flow.shape[:3]) < 0.9)

    kf, kb = keep(fw), keep(bw)
    return np.where(kf[..., None], fw, 0).astype(np.float32), kf, np.where(kb[..., None], bw, 0).astype(np.float32), kb


def write_stores(root, video="clip", seed=0):
    """A frames store and a label store (the arrays and attrs rule labels writes that the index reads)."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (T, H, W, 3), dtype=np.uint8)
    fw, kf, bw, kb = large_motion(seed)
    fpath, lpath = root / "frames" / f"{video}.zarr", root / "labels" / f"{video}.zarr"
    with atomic_group(fpath) as g:
        write_array(g, "frames", frames)
    with atomic_group(lpath) as g:
        for name, a in (("flow", fw), ("keep", kf), ("flow_bw", bw), ("keep_bw", kb)):
            write_array(g, name, a)
        write_array(g, "labelled", np.ones(T - 1, bool))
        write_array(g, "kept_fraction", kf.mean((1, 2)))
        write_array(g, "kept_fraction_bw", kb.mean((1, 2)))
        g.attrs.update({"video": video, "checkpoint_sha256": "teacher",
                        "frames_store": {"path": str(fpath), "shape": list(frames.shape),
                                         "fingerprint": fingerprint(frames, 0, T - 1)}})
    return fpath, lpath


def points(mask, flow=None):
    """(N, 2) (x, y) of the pixels of ``mask``, or of their targets x + F(x)."""
    ys, xs = np.nonzero(mask)
    p = np.stack([xs, ys], 1).astype(np.float64)
    return p + flow[ys, xs] if flow is not None else p


def min_gap(a, b):
    """Smallest Euclidean distance between two point sets (inf if either is empty)."""
    if not len(a) or not len(b):
        return np.inf
    return min(np.sqrt(((a[i:i + 512, None] - b[None]) ** 2).sum(-1)).min() for i in range(0, len(a), 512))


def gaps(fw, bw, train_fw, train_bw, score_fw, score_bw):
    """Per frame of the pair, the distance between everything trained on (sources and warped
    targets) and everything scored there."""
    t_train = np.concatenate([points(train_fw), points(train_bw, bw)])
    t_score = np.concatenate([points(score_fw), points(score_bw, bw)])
    t1_train = np.concatenate([points(train_bw), points(train_fw, fw)])
    t1_score = np.concatenate([points(score_bw), points(score_fw, fw)])
    return min_gap(t_train, t_score), min_gap(t1_train, t1_score)


def test_trained_and_scored_pixels_are_apart_after_warping(tmp_path):
    """A label store with the leak path; fine-tuning's samples (PairDataset) and the guard's
    scored pixels (training_groups) come from stores through the workflow's own readers."""
    fpath, lpath = write_stores(tmp_path)
    index = tmp_path / "train.json"
    aggregate_labels([str(lpath)], [str(fpath)], str(index))
    pairs = load_training_pairs(index)
    hold = HoldOut()
    cfg = FinetuneConfig(holdout_block=hold.block, holdout_every=hold.every, augment={"crop": (H, W), "no_aug": True})
    ds = PairDataset(pairs, cfg)
    trained = {(p.pair, p.direction): ds[(0, 0, i)]["valid"].numpy().astype(bool) for i, p in enumerate(pairs)}
    groups = training_groups(pairs, hold)["clip"]
    fw_all, kf_all, bw_all, kb_all = large_motion()
    lattice = hold.mask(H, W)
    for pair, g in enumerate(groups):
        fw, bw, kf, kb = fw_all[pair], bw_all[pair], kf_all[pair], kb_all[pair]
        tf, tb = trained[(pair, "fw")], trained[(pair, "bw")]
        # the leak path exists: most held forward pixels land outside a held block
        targets = np.clip(np.rint(points(kf & lattice, fw)), 0, [W - 1, H - 1]).astype(int)
        assert (~lattice[targets[:, 1], targets[:, 0]]).mean() > 0.5
        assert tf.sum() > 0.15 * kf.sum() and tb.sum() > 0.15 * kb.sum()
        assert g.score_fw.sum() > 0.05 * kf.sum() and g.score_bw.sum() > 0.03 * kb.sum()
        assert not (tf & ~kf).any() and not (g.score_bw & ~kb).any()
        assert min(gaps(fw, bw, tf, tb, g.score_fw, g.score_bw)) >= 8
        # The old masks (the lattice in each direction's own grid) fail the same check: a held
        # forward pixel's target is a trained backward pixel.
        old = gaps(fw, bw, kf & ~lattice, kb & ~lattice, kf & lattice, kb & lattice)
        assert old[1] < 1


@pytest.mark.parametrize("hold", [HoldOut(), HoldOut(block=24, every=7, band=16)])
def test_split_keeps_its_distance_for_any_settings(hold):
    fw, kf, bw, kb = (a[0] for a in large_motion(seed=3))
    s = pair_split(fw, kf, bw, kb, hold)
    assert s.score_fw.any() and s.train_fw.any() and s.train_bw.any()
    assert min(gaps(fw, bw, s.train_fw, s.train_bw, s.score_fw, s.score_bw)) >= hold.band
    # every scored pixel has a unit: its block of frame t (a backward pixel's, its target's)
    assert (s.unit_fw[s.score_fw] >= 0).all() and (s.unit_bw[s.score_bw] >= 0).all()
    assert (s.unit_fw[~s.score_fw] == -1).all() and (s.unit_bw[~s.score_bw] == -1).all()
    cells = hold.cells(H, W)
    assert (s.unit_fw[s.score_fw] == cells[s.score_fw]).all()
    held_cells = np.zeros(hold.n_cells(H, W), bool)
    held_cells[cells[hold.mask(H, W)]] = True
    assert held_cells[s.unit_bw[s.score_bw]].all()


def test_no_holdout_trains_every_verified_pixel_and_scores_none():
    fw, kf, bw, kb = (a[0] for a in large_motion())
    s = pair_split(fw, kf, bw, kb, None)
    assert (s.train_fw == kf).all() and (s.train_bw == kb).all() and not (s.score_fw.any() or s.score_bw.any())
    unit_fw, unit_bw = all_units(bw, kf, kb, 16)
    assert ((unit_fw >= 0) == kf).all() and ((unit_bw >= 0) == kb).all()
    assert unit_fw.max() < HoldOut(block=16).n_cells(H, W)


def test_dilate_is_a_chebyshev_square():
    rng = np.random.default_rng(2)
    m = rng.random((20, 30)) < 0.03
    ys, xs = np.nonzero(m)
    yy, xx = np.mgrid[0:20, 0:30]
    want = (np.maximum(abs(yy[..., None] - ys), abs(xx[..., None] - xs)) <= 3).any(-1)
    assert (dilate(m, 3) == want).all() and (dilate(m, 0) == m).all()


def test_bad_labels_and_settings_are_refused(tmp_path):
    fw, kf, bw, kb = (a[0] for a in large_motion())
    with pytest.raises(MotionRefineError, match="labels of one pair"):
        HoldOut().split(fw, kf, bw[:-1], kb)
    with pytest.raises(MotionRefineError, match="every >= 2"):
        HoldOut(every=1)
    _, lpath = write_stores(tmp_path)
    from motionrefine.core.store import open_group
    from motionrefine.flow.holdout import read_split

    fine = read_split(open_group(lpath), 0, HoldOut(), str(lpath))[2]
    assert fine.score_fw.any()
    with atomic_group(tmp_path / "fw_only.zarr") as g:
        write_array(g, "flow", fw[None])
        write_array(g, "keep", kf[None])
    with pytest.raises(MotionRefineError, match="no array flow_bw, keep_bw"):
        read_split(open_group(tmp_path / "fw_only.zarr"), 0, HoldOut(), "fw_only.zarr")
