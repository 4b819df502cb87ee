"""Fine-tune the PIPs tracker on its own verified pseudo-labels (method notes §3.5).

Recipe: from the pre-trained tracker, reproduce the verified forward tracks of each
S-frame window: PIPs sequence loss over the update iterations (γ = 0.8) plus the
correlation score-map loss (balanced BCE, positives at the rounded label / stride); no
visibility loss (every label point counts as visible). AdamW (lr 1e-5, weight decay 1e-4,
eps 1e-8), CosineAnnealingLR with T_max = steps + 200 optimiser steps, gradient clipping
at 5, gradient accumulation (official: 8 samples of 128 tracks per optimiser step).

A sample is up to ``tracks_per_sample`` tracks of one window of one video (``track.samples``).
Input augmentation of the PIPs sizes: ``track.augment`` (crops are placed so that at least
one track starts inside, and only tracks whose first-frame point lies in the crop are trained
on). FlowPips (size flow-small) trains its update only (``track.window_loss``), guarded by
held-back tracks (``track.guard``).

Determinism and resume as in ``finetune``: forward pass k = step·grad_acc + j uses sample
``order(epoch)[k mod n]`` and augmentation rng ``(seed, step, j)``; checkpoints in
``out_dir/checkpoints`` hold model, optimiser, scheduler and RNG states.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from motionrefine import __version__
from motionrefine.core.device import pick_device
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.mapping import from_mapping
from motionrefine.flow.augment import AugmentConfig
from motionrefine.flow.holdout import HoldOut
from motionrefine.models.checkpoint import load_state_strict
from motionrefine.models.pips import Pips, read_pips_state, save_pips, score_map_loss, sequence_loss
from motionrefine.models.pips.flowpips import FLOWPIPS_SIZE, load_flowpips, save_flowpips
from motionrefine.track.augment import augment_clip, default_augment
from motionrefine.track.guard import guard_update
from motionrefine.track.holdout import GUARD_BAND_PX
from motionrefine.track.samples import load_sample, load_track_samples, sample_index, samples_digest
from motionrefine.track.window_loss import WindowInputs, flowpips_track_loss
from motionrefine.train import state
from motionrefine.train.loop import Training, optimizer_step

log = logging.getLogger("motionrefine")

TSV_COLUMNS = ("step", "loss", "seq_loss", "score_loss", "epe_to_label", "lr", "seconds")
RUNTIME_FIELDS = state.RUNTIME_FIELDS | {"log_every"}


@dataclass
class TrackFinetuneConfig:
    size: str = "small"
    stride: int | None = None
    steps: int = 100                # optimiser steps (official Horse10: 6000 passes / 8 = 750)
    grad_acc: int = 8
    tracks_per_sample: int = 128
    min_tracks: int = 8             # a window's leftover chunk smaller than this is dropped
    iters: int = 6
    lr: float = 1e-5
    weight_decay: float = 1e-4
    adam_eps: float = 1e-8
    t_max_extra: int = 200          # CosineAnnealingLR T_max = steps + this
    clip: float = 5.0
    gamma: float = 0.8
    score_weight: float = 1.0
    seed: int = 0
    shuffle: bool = True
    augment: AugmentConfig = field(default_factory=default_augment)
    checkpoint_every: int = 25
    keep_checkpoints: int = 2
    log_every: int = 10  # a progress line every this many steps
    # flow-small: hold back the tracks that start in a lattice of blocks (flow.guard.HoldOut), train
    # on none within 8 px of them at any frame (track.holdout), and keep the fine-tuned update only
    # if it agrees better with them than the initial one did
    guard: bool = True
    guard_margin: float = 0.0       # relative: keep iff held-back EPE < initial · (1 − margin)
    holdout_block: int = 16
    holdout_every: int = 5
    device: str = "auto"
    threads: int | None = 1

    def __post_init__(self):
        if isinstance(self.augment, dict):
            aug = {"vflip_prob": 0.0, **self.augment}
            self.augment = AugmentConfig.from_dict(aug)
        elif isinstance(self.augment, bool):
            self.augment = AugmentConfig(vflip_prob=0.0, no_aug=not self.augment)
        for name in ("steps", "grad_acc", "tracks_per_sample", "min_tracks", "iters", "checkpoint_every",
                     "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise MotionRefineError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrackFinetuneConfig":
        return from_mapping(cls, d, "track fine-tuning config")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d


# --------------------------------------------------------------------------- loss

def track_loss(model: Pips, rgbs: torch.Tensor, trajs: torch.Tensor, cfg: TrackFinetuneConfig) -> tuple[torch.Tensor, dict]:
    """rgbs (B, S, 3, H, W) 0–255, trajs (B, S, N, 2) px labels (all visible)."""
    want_heat = cfg.score_weight > 0
    out = model(trajs[:, 0], rgbs, iters=cfg.iters, return_heatmaps=want_heat)
    seq = sequence_loss(out.coords, trajs, None, cfg.gamma)
    score = score_map_loss(out.heatmaps, trajs / model.stride) if want_heat else seq.new_zeros(())
    loss = seq + cfg.score_weight * score
    with torch.no_grad():
        epe = torch.linalg.vector_norm(out.coords[-1] - trajs, dim=-1).mean().item()
    return loss, {"seq_loss": seq.item(), "score_loss": score.item(), "epe": epe}


# --------------------------------------------------------------------------- main entry

def _finetune_flowpips(c: TrackFinetuneConfig, samples, held, split: dict, init_checkpoint, raft_checkpoint, backbone,
                       out_dir, stop_at, expected_sha256, dev):
    """FlowPips: only the update (mixer) trains; the frozen RAFT's flow and features are
    computed once per video. No input augmentation (it would change the frozen inputs; the
    official tracking code has none either). ``held``: the guard's held-back samples;
    ``split``: its track counts (``samples.load_track_samples``), added to its decision."""
    model, init_sha = load_flowpips(init_checkpoint, raft_checkpoint, expected_sha256)
    backbone_sha = model.load_raft(backbone) if backbone is not None else None
    initial = {k: v.detach().clone() for k, v in model.mixer.state_dict().items()}
    model.to(dev).train()
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay, eps=c.adam_eps)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=c.steps + c.t_max_extra)
    identity = {"config": state.result_config(c.to_dict(), RUNTIME_FIELDS), "init_sha256": init_sha,
                "samples_digest": samples_digest(samples), "backbone_sha256": backbone_sha}
    run = Training("track fine-tuning", out_dir, model, optimizer, scheduler, identity,
                   TSV_COLUMNS[:-1] + ("epe_init", "seconds"), c.steps, dev, stop_at)
    cache: dict = {}
    inputs = WindowInputs(model)

    def step(s: int, _) -> list[str]:
        lr = run.lr
        sums = {"loss": 0.0, "epe": 0.0, "epe_init": 0.0}

        def passes():
            for j in range(c.grad_acc):
                smp = samples[sample_index(s * c.grad_acc + j, len(samples), c.seed, c.shuffle)]
                _, tracks = load_sample(smp, cache)
                loss, m = flowpips_track_loss(model, inputs, smp, tracks, c.gamma, c.iters)
                yield loss / c.grad_acc
                sums["loss"] += loss.item() / c.grad_acc
                sums["epe"] += m["epe"] / c.grad_acc
                sums["epe_init"] += m["epe_init"] / c.grad_acc

        optimizer_step(model, optimizer, scheduler, passes(), c.clip, s)
        return [f"{sums['loss']:.6g}", f"{sums['loss']:.6g}", "0", f"{sums['epe']:.6g}", f"{lr:.6g}",
                f"{sums['epe_init']:.6g}"]

    run.run(step, checkpoint_every=c.checkpoint_every, keep_checkpoints=c.keep_checkpoints)
    guard = None
    if c.guard and run.completed:
        guard = {**guard_update(c, model, initial, inputs, held, cache),
                 "excluded_tracks": split.get("excluded_tracks", 0), "train_tracks": split.get("train_tracks", 0),
                 "guard_band_px": GUARD_BAND_PX}
    summary = {**run.progress(), "samples": len(samples), "tracks": int(sum(len(s.rows) for s in samples)),
               "init_sha256": init_sha, "raft_sha256": model.raft_sha256, "loss_tsv": str(run.tsv),
               "completed": run.completed, "guard": guard}
    return run.finish(summary, lambda path: save_flowpips(model, path), config=c.to_dict(), code_version=__version__)


def finetune_tracker(cfg: TrackFinetuneConfig | dict, label_paths: Sequence, frames_paths: Sequence | Mapping,
                     init_checkpoint: str | os.PathLike, out_dir: str | os.PathLike, stop_at: int | None = None,
                     expected_sha256: str | None = None, raft_checkpoint: str | os.PathLike | None = None,
                     backbone: str | os.PathLike | None = None) -> dict:
    """Fine-tune PIPs from ``init_checkpoint`` on track-labels stores (``track_labels.make_track_labels``)
    with their frames stores; resumes from the latest checkpoint in ``out_dir/checkpoints``.

    Writes ``out_dir/loss.tsv`` (per optimiser step), checkpoints every ``checkpoint_every``
    steps, and when done ``out_dir/final.pth`` (``load_pips(path, size)``; flow-small:
    ``load_flowpips``, the guard's choice of update) and ``out_dir/summary.json``.
    ``stop_at``: stop after that many optimiser steps (resumable).
    ``raft_checkpoint``: the RAFT-small weights a FlowPips tracker runs on (size flow-small).
    ``backbone``: other RAFT-small weights to put under it before fine-tuning (e.g. the flow
    refinement's); the refined tracker then runs on them, and its file names their sha256.
    """
    c = cfg if isinstance(cfg, TrackFinetuneConfig) else TrackFinetuneConfig.from_dict(cfg)
    flowpips = c.size == FLOWPIPS_SIZE
    holdout = HoldOut(c.holdout_block, c.holdout_every) if c.guard and flowpips else None
    split: dict = {}  # the guard's track counts: held (scored), excluded, train
    samples = load_track_samples(label_paths, frames_paths, c.tracks_per_sample, c.min_tracks, c.seed, holdout,
                                 counts=split)
    if not samples:
        why = (f" after the guard's split ({split.get('held_tracks', 0)} tracks held back, "
               f"{split.get('excluded_tracks', 0)} within {GUARD_BAND_PX:g} px of them left out; tracking.finetune.holdout_every sets how many "
               "are held back)") if holdout else ""
        raise MotionRefineError(f"no training samples: the label stores hold no window with >= {c.min_tracks} "
                                f"verified tracks{why}")
    dev = pick_device(c.device, c.threads)
    state.seed_everything(c.seed)
    if flowpips:
        held = load_track_samples(label_paths, frames_paths, c.tracks_per_sample, 1, c.seed, holdout,
                                  held=True) if holdout else []
        return _finetune_flowpips(c, samples, held, split, init_checkpoint, raft_checkpoint, backbone, out_dir,
                                  stop_at, expected_sha256, dev)

    weights, init_sha = read_pips_state(init_checkpoint, expected_sha256)
    model = Pips(c.size, **({"stride": c.stride} if c.stride else {}))
    load_state_strict(model, weights, str(init_checkpoint))
    model.to(dev).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay, eps=c.adam_eps)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=c.steps + c.t_max_extra)
    identity = {"config": state.result_config(c.to_dict(), RUNTIME_FIELDS), "init_sha256": init_sha,
                "samples_digest": samples_digest(samples)}
    run = Training("track fine-tuning", out_dir, model, optimizer, scheduler, identity, TSV_COLUMNS, c.steps, dev,
                   stop_at)
    cache: dict = {}

    def step(s: int, _) -> list[str]:
        lr = run.lr
        sums = {"loss": 0.0, "seq_loss": 0.0, "score_loss": 0.0, "epe": 0.0}

        def passes():  # one forward pass per accumulated sample, each after the previous backward
            for j in range(c.grad_acc):
                smp = samples[sample_index(s * c.grad_acc + j, len(samples), c.seed, c.shuffle)]
                frames, tracks = load_sample(smp, cache)
                aug = augment_clip(frames, tracks, np.random.default_rng([c.seed, s, j]), c.augment)
                if aug["tracks"].shape[1] == 0:  # only if no label starts inside the frame
                    continue
                rgbs = torch.from_numpy(aug["frames"]).permute(0, 3, 1, 2)[None].to(dev)
                trajs = torch.from_numpy(aug["tracks"])[None].to(dev)
                loss, m = track_loss(model, rgbs, trajs, c)
                yield loss / c.grad_acc
                sums["loss"] += loss.item() / c.grad_acc
                for k in ("seq_loss", "score_loss", "epe"):
                    sums[k] += m[k] / c.grad_acc

        optimizer_step(model, optimizer, scheduler, passes(), c.clip, s)
        return [f"{sums['loss']:.6g}", f"{sums['seq_loss']:.6g}", f"{sums['score_loss']:.6g}", f"{sums['epe']:.6g}",
                f"{lr:.6g}"]

    run.run(step, checkpoint_every=c.checkpoint_every, keep_checkpoints=c.keep_checkpoints, log_every=c.log_every)
    summary = {**run.progress(), "samples": len(samples), "tracks": int(sum(len(s.rows) for s in samples)),
               "init_sha256": init_sha, "loss_tsv": str(run.tsv), "completed": run.completed}
    return run.finish(summary, lambda path: save_pips(model, path), config=c.to_dict(), code_version=__version__)
