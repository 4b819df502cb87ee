"""Fine-tuning end to end on real frames (dog_run) with labels from the real RAFT-small checkpoint.

Tiny on purpose (64×96 frames, batch 2, 4 refinement iterations, 2–4 steps): the point is
the mechanics — checkpoints, resume, determinism, the official checkpoint layout.
"""

import csv
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import assert_curve_close, require_asset
from motionrefine.config.schema import job_log
from motionrefine.core.errors import MotionRefineError
from motionrefine.flow.finetune import TSV_COLUMNS, FinetuneConfig, finetune, make_scheduler
from motionrefine.flow.holdout import HoldOut, dilate, read_split
from motionrefine.flow.pairs import PairDataset, batch_indices
from motionrefine.flow.inference import flow_stage
from motionrefine.flow.labels import aggregate_labels, load_training_pairs, make_flow_labels
from motionrefine.models.checkpoint import load_raft
from motionrefine.core.store import atomic_group, open_group, write_array
from motionrefine.train.curve import prepare_tsv, read_loss_curve
from motionrefine.train.state import list_checkpoints

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = SHARED / "weights" / "raft-small.pth"
FRAMES = SHARED / "data" / "frames" / "dog_run"

@pytest.fixture(autouse=True)
def _shared_assets():
    """A missing asset fails the test naming the file (never a silent skip)."""
    for path in (WEIGHTS, FRAMES):
        require_asset(path)


@pytest.fixture(scope="module")
def training_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    paths = sorted(FRAMES.glob("*.jpg"))[:5]
    frames = np.stack([cv2.resize(cv2.imread(str(p))[..., ::-1], (96, 64), interpolation=cv2.INTER_AREA)
                       for p in paths])
    with atomic_group(root / "frames" / "dog_run.zarr") as g:
        write_array(g, "frames", np.ascontiguousarray(frames))
        g.attrs["source"] = {"path": str(FRAMES), "resized_to": [64, 96]}
    flow_stage(str(root / "frames" / "dog_run.zarr"), str(root / "flow" / "dog_run.zarr"), str(WEIGHTS),
               iters=12, progress=False, device="cpu")
    make_flow_labels(str(root / "frames" / "dog_run.zarr"), str(root / "flow" / "dog_run.zarr"),
                     str(root / "labels" / "flow" / "dog_run.zarr"))
    index = root / "labels" / "training_set.json"
    aggregate_labels([str(root / "labels" / "flow" / "dog_run.zarr")], [str(root / "frames" / "dog_run.zarr")],
                     str(index))
    return index


def tiny(**kw):
    # The official schedule and order (and no held-back pixels), as the pinned curve was recorded with.
    base = dict(steps=4, batch_size=2, iters=4, augment={"crop": (64, 96)}, checkpoint_every=2,
                keep_checkpoints=10, device="cpu", schedule_extra_steps=100, shuffle=False, holdout_every=0)
    base.update(kw)
    return FinetuneConfig(**base)


def weights(path):
    return load_raft(path, "small")[0].state_dict()


def same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_training_set_from_real_labels(training_set):
    pairs = load_training_pairs(training_set)
    # 4 forward pairs and their 4 reverse pairs, each with some verified pixels.
    assert len(pairs) == 8 and all(p.kept_fraction > 0 for p in pairs)
    assert sorted((p.direction, p.pair) for p in pairs) == [(d, i) for d in ("bw", "fw") for i in range(4)]


def test_tiny_finetune_writes_checkpoints_log_and_official_final(training_set, tmp_path):
    with job_log(tmp_path / "finetune.log"):  # as the rule runs it
        s = finetune(tiny(steps=3, log_every=2), training_set, WEIGHTS, tmp_path / "run")
    # Progress lines in the rule log every 2 steps and at the last one; no bar (not a terminal).
    text = (tmp_path / "finetune.log").read_text()
    steps = re.findall(r"fine-tuning step (\d+)/3 loss [-\d.e+]+ lr [-\d.e+]+ [\d.]+ s/step ETA \d+m\d\ds", text)
    assert steps == ["2", "3"] and "it/s" not in text and "step/s" not in text
    assert s["completed"] and s["steps_done"] == 3 and s["crop"] == [64, 96]
    assert [k for k, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [2, 3]
    curve = read_loss_curve(tmp_path / "run" / "loss.tsv")
    assert tuple(curve.columns) == TSV_COLUMNS and list(curve["step"]) == [1, 2, 3]
    assert np.isfinite(curve["loss"]).all() and np.isfinite(curve["epe_to_label"]).all()
    assert curve["lr"][0] == pytest.approx(1e-4 / 25)  # OneCycleLR starts at max_lr / 25
    assert curve["lr"][1] > curve["lr"][0]
    # The final weights load with the strict official-layout loader and have moved.
    model, sha = load_raft(s["final"], "small")
    assert sha == s["final_sha256"]
    init = weights(WEIGHTS)
    assert not same_weights(model.state_dict(), init)
    raw = torch.load(s["final"], weights_only=True)
    assert all(k.startswith("module.") for k in raw)
    assert (tmp_path / "run" / "summary.json").is_file()


# Loss curve (without the seconds column) of a tiny fixed-seed run, recorded on the CPU before the
# trainers shared one loop: any change of data, random draws or update shows here (within float noise).
PINNED_CURVE = [
    ["1", "0.771202", "4e-06", "0.327469"],
    ["2", "1.16419", "1.42128e-05", "0.586947"],
    ["3", "0.887444", "2.44255e-05", "0.507275"],
    ["4", "0.875797", "3.46383e-05", "0.297735"],
]


def test_deterministic_and_resume_matches_a_straight_run(training_set, tmp_path):
    a = finetune(tiny(steps=2), training_set, WEIGHTS, tmp_path / "a")
    b = finetune(tiny(steps=2, prefetch=0), training_set, WEIGHTS, tmp_path / "b")
    assert same_weights(weights(a["final"]), weights(b["final"]))  # same seed ⇒ identical weights

    straight = finetune(tiny(steps=4), training_set, WEIGHTS, tmp_path / "straight")
    rows = [r.split("\t")[:-1] for r in (tmp_path / "straight" / "loss.tsv").read_text().splitlines()]
    assert rows[0] == list(TSV_COLUMNS[:-1])
    assert_curve_close(rows[1:], PINNED_CURVE)
    part = finetune(tiny(steps=4), training_set, WEIGHTS, tmp_path / "resumed", stop_at=2)
    assert not part["completed"] and "final" not in part
    assert not (tmp_path / "resumed" / "final.pth").exists()
    rest = finetune(tiny(steps=4), training_set, WEIGHTS, tmp_path / "resumed")
    assert rest["resumed_from"] == 2 and rest["steps_done"] == 4
    assert same_weights(weights(straight["final"]), weights(rest["final"]))
    c1 = read_loss_curve(tmp_path / "straight" / "loss.tsv")
    c2 = read_loss_curve(tmp_path / "resumed" / "loss.tsv")
    assert list(c2["step"]) == [1, 2, 3, 4]
    assert np.array_equal(c1["loss"].to_numpy(), c2["loss"].to_numpy())
    # A rerun of a finished run trains nothing and ends at the same step count.
    again = finetune(tiny(steps=4), training_set, WEIGHTS, tmp_path / "resumed")
    assert again["resumed_from"] == 4 and again["steps_done"] == 4
    assert again["final_sha256"] == rest["final_sha256"]
    # Resuming with a result-changing setting is refused; runtime settings may change.
    with pytest.raises(MotionRefineError, match="different run"):
        finetune(tiny(steps=4, lr=2e-4), training_set, WEIGHTS, tmp_path / "resumed")
    finetune(tiny(steps=4, checkpoint_every=1, prefetch=0), training_set, WEIGHTS, tmp_path / "resumed")


def test_worker_processes_give_the_same_weights(training_set, tmp_path):
    a = finetune(tiny(steps=1, num_workers=0), training_set, WEIGHTS, tmp_path / "w0")
    b = finetune(tiny(steps=1, num_workers=1), training_set, WEIGHTS, tmp_path / "w1")
    assert same_weights(weights(a["final"]), weights(b["final"]))


@pytest.mark.parametrize("mode", ["photometric", "cycle"])
def test_baseline_modes_train(training_set, tmp_path, mode):
    s = finetune(tiny(steps=1, mode=mode, smooth_order=1 if mode == "photometric" else 2), training_set,
                 WEIGHTS, tmp_path / mode)
    curve = read_loss_curve(s["loss_tsv"])
    assert len(curve) == 1 and np.isfinite(curve["loss"]).all() and curve["loss"][0] > 0
    assert not same_weights(weights(s["final"]), weights(WEIGHTS))


def test_rebalanced_labels_train(training_set, tmp_path):
    s = finetune(tiny(steps=1, rebalance=True), training_set, WEIGHTS, tmp_path / "rb")
    assert np.isfinite(read_loss_curve(s["loss_tsv"])["loss"]).all()


def test_config_and_batches():
    cfg = FinetuneConfig.from_dict({"steps": 10, "augment": {"crop": [128, 256], "no_aug": True}})
    assert cfg.augment.crop == (128, 256) and cfg.augment.no_aug
    assert (cfg.lr, cfg.weight_decay, cfg.adam_eps, cfg.clip, cfg.batch_size, cfg.seed) == (1e-4, 1e-4, 1e-8, 5.0, 12, 125)
    assert cfg.train_iters == 12 and FinetuneConfig(variant="large").train_iters == 32
    assert FinetuneConfig.from_dict(cfg.to_dict()) == cfg
    assert FinetuneConfig.from_dict({"crop": [64, 96], "iters": None}).augment.crop == (64, 96)  # schema shorthand
    with pytest.raises(MotionRefineError):
        FinetuneConfig.from_dict({"crop": [64, 96], "augment": {"crop": [64, 96]}})
    with pytest.raises(MotionRefineError):
        FinetuneConfig.from_dict({"stepz": 3})
    with pytest.raises(MotionRefineError):
        FinetuneConfig(mode="dense")
    # Index order with drop_last, then the next epoch; shuffled epochs are seeded permutations.
    assert [batch_indices(5, 2, s, 0, False) for s in range(3)] == [[0, 1], [2, 3], [0, 1]]
    shuffled = [batch_indices(6, 3, s, 125, True) for s in range(4)]
    assert sorted(shuffled[0] + shuffled[1]) == list(range(6))
    assert shuffled == [batch_indices(6, 3, s, 125, True) for s in range(4)]
    # Fewer pairs than a batch (a single stereo pair): batches repeat them.
    assert [batch_indices(1, 3, s, 0, False) for s in range(2)] == [[0, 0, 0], [0, 0, 0]]
    assert [batch_indices(2, 3, s, 0, False) for s in range(2)] == [[0, 1, 0], [1, 0, 1]]
    with pytest.raises(MotionRefineError):
        batch_indices(0, 2, 0, 0, False)


@pytest.mark.parametrize("steps", [3, 10, 100, 1000])
def test_default_schedule_ends_near_zero(steps):
    cfg = FinetuneConfig(steps=steps)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = make_scheduler(opt, cfg)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(cfg.lr)
    assert lrs[-1] <= 0.05 * max(lrs)


def test_toy_runs_have_a_schedule():
    for steps in (1, 2):
        cfg = FinetuneConfig(steps=steps)
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
        sched = make_scheduler(opt, cfg)
        for _ in range(steps):
            opt.step()
            sched.step()


def test_shuffled_epochs_visit_every_video():
    # 3 videos laid out one after the other, as the training index is, forward then backward.
    videos = [v for v, n in (("tree", 46), ("dog_run", 46), ("carphone", 46)) for _ in range(n)]
    cfg = FinetuneConfig()
    assert cfg.shuffle
    per_epoch = len(videos) // 2
    for epoch in range(3):
        seen = [videos[i] for s in range(epoch * per_epoch, (epoch + 1) * per_epoch)
                for i in batch_indices(len(videos), 2, s, cfg.seed, cfg.shuffle)]
        assert set(seen) == {"tree", "dog_run", "carphone"}
        assert len(seen) == len(videos)  # an even count: nothing dropped
        # and the last tenth of an epoch is not one video
        assert len(set(seen[-len(seen) // 10:])) > 1


def test_held_back_pixels_never_reach_the_loss(training_set):
    pairs = load_training_pairs(training_set)
    cfg = tiny(holdout_every=5, augment={"crop": (64, 96), "no_aug": True})
    ds = PairDataset(pairs, cfg)
    hold = HoldOut(cfg.holdout_block, cfg.holdout_every)
    held = torch.from_numpy(hold.mask(64, 96))
    total = 0
    for i, p in enumerate(pairs):
        valid = ds[(0, 0, i)]["valid"].numpy().astype(bool)
        # exactly the guard's split of the pair: nothing within the band of a scored pixel
        split = read_split(open_group(p.labels), p.pair, hold)[2]
        assert (valid == split.train(p.direction)).all()
        assert not (valid & dilate(split.score_fw if p.direction == "fw" else split.score_bw, hold.band)).any()
        total += int(valid.sum())
    assert total > 0
    full = PairDataset(pairs, tiny(augment={"crop": (64, 96), "no_aug": True}))
    assert sum(int(full[(0, 0, i)]["valid"][held].sum()) for i in range(len(pairs))) > 0


def test_loss_log_is_trimmed_to_the_resumed_step(tmp_path):
    p = tmp_path / "loss.tsv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(TSV_COLUMNS)
        for s in range(1, 6):
            w.writerow([s, 1.0, 1e-4, 0.5, 0.1])
    prepare_tsv(p, TSV_COLUMNS, 3)  # steps 4 and 5 were logged after the last checkpoint: redone
    assert list(read_loss_curve(p)["step"]) == [1, 2, 3]
    prepare_tsv(p, TSV_COLUMNS, 0)
    assert len(read_loss_curve(p)) == 0


def test_focus_weighs_labels_by_the_pretrained_students_disagreement(training_set, tmp_path):
    from motionrefine.flow.focus import disagreement_weights
    pairs = load_training_pairs(training_set)
    ds = PairDataset(pairs, tiny())
    model = load_raft(WEIGHTS, "small")[0]
    # Only training pixels weigh (held-back ones: test_held_back_pixels_never_reach_the_loss's
    # split is ds.read's). The labels are this checkpoint's own 12-iteration flow: at 12
    # iterations the student agrees with every one of them (nothing to focus on), at 4 it does not.
    own = disagreement_weights(model, 12, ds, 1.0)
    short = disagreement_weights(model, 4, ds, 1.0)
    kept = []
    for i, (w_own, w_short) in enumerate(zip(own, short)):
        valid = ds.read(i)[2]
        assert (w_own[~valid] == 0).all() and (w_short[~valid] == 0).all()
        assert np.allclose(w_own[valid], 1.0, atol=1e-3)
        # mean 1 over a pair's training pixels (less where the cap cut an outlier)
        assert 0.5 < w_short[valid].mean() <= 1 + 1e-5
        kept.append(w_short[valid])
    kept = np.concatenate(kept)
    assert kept.size > 100 and kept.std() > 0.2
    base = finetune(tiny(steps=2, holdout_every=5), training_set, WEIGHTS, tmp_path / "base")
    a = finetune(tiny(steps=2, holdout_every=5, focus=1.0, focus_crops=True, iters=4), training_set, WEIGHTS,
                 tmp_path / "a")
    b = finetune(tiny(steps=2, holdout_every=5, focus=1.0, focus_crops=True, iters=4), training_set, WEIGHTS,
                 tmp_path / "b")
    assert same_weights(weights(a["final"]), weights(b["final"]))  # deterministic
    assert not same_weights(weights(a["final"]), weights(base["final"]))
