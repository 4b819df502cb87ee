"""Fine-tune the pre-trained RAFT on cycle-verified pseudo-labels (or on a self-supervised
baseline objective), resumable and deterministic.

Modes:
- ``labels`` (the recipe): RAFT sequence loss on the sparse pseudo-labels.
- ``photometric`` (baseline, UFlow's unsupervised loss): occlusion-masked census loss + 2 ·
  edge-aware second-order smoothness (edge constant 150), both directions;
- ``cycle`` (baseline, UnFlow's form): the same occlusion-masked census loss + 0.2 · forward-
  backward cycle consistency on the non-occluded pixels, both directions.
Their constants are ``flow.losses.SelfSupWeights`` (the published values, cited there); the
occlusion masks come from the forward-backward test on the current model's final
predictions, detached (UFlow's stop-gradient). The self-supervised losses see the frames
without colour jitter (same crop and flips).

Determinism and resume: batches are a pure function of (seed, step) (``flow.pairs``), so a
run that resumes from a checkpoint at step s sees exactly the batches an uninterrupted run
would. The loop, checkpoints and loss curve are ``train.loop``'s; the final weights go to
``out_dir/final.pth`` in the official layout.

Speed: on the CPU a batch is split over the job's threads (``train.shards``, one intra-op
thread each); started as several ranks (``train.launch``), each rank trains its slice of
the global batch under DistributedDataParallel (``train.distributed``); on CUDA the forward
pass runs under bf16 autocast and the loss in float32. None of these changes the recipe:
the same samples, loss and schedule, up to float rounding.
Bitwise determinism is tested on the CPU; on CUDA, grid_sample's backward (used by the
correlation lookup and the baseline losses) accumulates atomically, so runs agree only closely.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from motionrefine import __version__
from motionrefine.core.device import pick_device
from motionrefine.core.errors import MotionRefineError
from motionrefine.flow.finetune_config import MODES, FinetuneConfig  # noqa: F401 (re-exported)
from motionrefine.flow.trainset import TrainingPair, load_training_pairs
from motionrefine.flow.losses import (cycle_objective, occlusion_masks, photometric_objective, sequence_loss,
                                     sequence_weights)
from motionrefine.flow.focus import disagreement_weights
from motionrefine.flow.pairs import PairDataset, common_crop, make_loader
from motionrefine.models.checkpoint import load_raft, save_raft
from motionrefine.train import distributed, state
from motionrefine.train.loop import Training, clip_and_step
from motionrefine.train.shards import ThreadShards

TSV_COLUMNS = ("step", "loss", "lr", "epe_to_label", "seconds")
# Precision and parallel layout change float rounding, not the recipe: a resume may change them.
RUNTIME_FIELDS = state.RUNTIME_FIELDS | {"num_workers", "prefetch", "shards", "log_every", "amp"}


# ------------------------------------------------------------------ losses per mode

def use_bf16(cfg: FinetuneConfig, device: torch.device) -> bool:
    """bf16 autocast only where it pays and is supported: CUDA devices with bf16."""
    return cfg.amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()


def _predict(model, img1: torch.Tensor, img2: torch.Tensor, iters: int, bf16: bool) -> list[torch.Tensor]:
    """The training forward pass; under bf16 autocast when asked, predictions back in float32
    so that every loss is computed in float32."""
    if not bf16:
        return model(img1, img2, iters=iters)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        preds = model(img1, img2, iters=iters)
    return [p.float() for p in preds]


def compute_loss(model, batch: dict, cfg: FinetuneConfig, step: int = 0,
                 bf16: bool = False) -> tuple[torch.Tensor, dict]:
    """The mode's loss of one batch at training step ``step`` (0-based) and label metrics."""
    img1, img2 = batch["img1"], batch["img2"]
    label, valid = batch["flow"], batch["valid"]
    iters = cfg.train_iters
    if cfg.mode == "labels":
        preds = _predict(model, img1, img2, iters, bf16)
        return sequence_loss(preds, label, valid, batch["weight"], cfg.gamma, cfg.max_flow)

    b = img1.shape[0]
    # Both directions in one batch: they share the encoders' cost structure and BN state.
    preds = _predict(model, torch.cat([img1, img2]), torch.cat([img2, img1]), iters, bf16)
    ws = sequence_weights(len(preds), cfg.gamma)
    w = cfg.selfsup
    raw1, raw2 = batch["raw1"], batch["raw2"]
    if step >= cfg.occlusion_after:
        vis_f, vis_b = occlusion_masks(preds[-1][:b], preds[-1][b:], w)
    else:
        vis_f = vis_b = torch.ones_like(valid, dtype=torch.bool)
    objective = photometric_objective if cfg.mode == "photometric" else cycle_objective
    loss = img1.new_zeros(())
    for w_i, p in zip(ws, preds):
        loss = loss + w_i * objective(raw1, raw2, p[:b], p[b:], vis_f, vis_b, w)
    with torch.no_grad():
        _, metrics = sequence_loss([preds[-1][:b].detach()], label, valid, None, cfg.gamma, cfg.max_flow)
    return loss, metrics


def make_scheduler(optimizer, cfg: FinetuneConfig):
    """One-cycle: linear warm-up over ``pct_start``, then linear anneal to ~0 at the last step."""
    # OneCycleLR needs a warm-up of at least 2 steps and an anneal of at least one: toy runs
    # (under 3 steps) follow the first steps of a 3-step cycle.
    total = max(3, cfg.steps + cfg.schedule_extra_steps)
    pct = max(cfg.pct_start, 2.0 / total)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total, pct_start=pct,
                                               anneal_strategy="linear", cycle_momentum=False)


def _pairs_digest(pairs: Sequence[TrainingPair]) -> str:
    return hashlib.sha256(json.dumps([(p.video, p.pair) for p in pairs]).encode()).hexdigest()


# ------------------------------------------------------------------ main entry

def finetune(config: FinetuneConfig | dict, training_set, init_checkpoint: str | os.PathLike,
             out_dir: str | os.PathLike, log_path: str | os.PathLike | None = None,
             stop_at: int | None = None, expected_sha256: str | None = None) -> dict:
    """Fine-tune from ``init_checkpoint`` on ``training_set`` (index path, parsed index or
    list of :class:`TrainingPair`). Resumes from the latest checkpoint in ``out_dir``.

    ``log_path``: loss-curve TSV (step, loss, lr, epe_to_label, seconds); default
    ``out_dir/loss.tsv``. ``stop_at``: end this call after that many total steps (checkpoint
    written) without finishing, e.g. to fit a job time limit; a later call continues.
    Returns a summary dict (``final`` is the path of the final weights once all steps ran).
    """
    cfg = config if isinstance(config, FinetuneConfig) else FinetuneConfig.from_dict(config)
    pairs = load_training_pairs(training_set)
    if not pairs:
        raise MotionRefineError("the training set has no pairs (no pixel passed the cycle check?)")
    crop = common_crop(pairs, cfg)
    if crop != tuple(cfg.augment.crop):
        cfg = replace(cfg, augment=replace(cfg.augment, crop=crop))
    dev = pick_device(cfg.device, cfg.threads)
    denv, dev = distributed.setup(dev)
    slots = distributed.rank_slots(cfg.batch_size, denv)
    state.seed_everything(cfg.seed)

    model, init_sha = load_raft(init_checkpoint, cfg.variant, expected_sha256)
    model.to(dev)
    focus = None
    if cfg.focus > 0 and cfg.mode == "labels":
        # From the pretrained weights, before the first step (so a resumed run recomputes the same).
        focus = disagreement_weights(model, cfg.train_iters, PairDataset(pairs, cfg), cfg.focus)
    model.train()
    if cfg.freeze_bn:
        model.freeze_bn()
    net = distributed.wrap(model, denv, dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
    scheduler = make_scheduler(optimizer, cfg)
    identity = {"config": state.result_config(cfg.to_dict(), RUNTIME_FIELDS), "init_sha256": init_sha,
                "pairs_digest": _pairs_digest(pairs)}
    run = Training("fine-tuning", out_dir, model, optimizer, scheduler, identity, TSV_COLUMNS, cfg.steps, dev,
                   stop_at, log_path, dist=denv)
    bf16 = use_bf16(cfg, dev)
    if cfg.shards is not None:
        n_shards = cfg.shards
    else:
        n_shards = min(cfg.threads or 1, len(slots)) if dev.type == "cpu" and not denv.active else 1
    if n_shards > 1 and denv.active:
        raise MotionRefineError("shards > 1 splits a batch over threads of one process; with several "
                                "training processes leave shards unset")
    shards = ThreadShards(min(n_shards, len(slots)))

    def step(s: int, batch: dict) -> list[str]:
        batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        lr = run.lr
        optimizer.zero_grad(set_to_none=True)
        if shards.n > 1:
            loss, parts = shards.backward(lambda sub: compute_loss(net, sub, cfg, s, bf16), batch, params, s)
        else:
            loss, metrics = compute_loss(net, batch, cfg, s, bf16)
            parts = [metrics]
        # Pooled over slices and ranks: the loss as the mean over the global batch, the epe
        # over all its label pixels. Every rank sees the same values, so all stop together.
        w = len(slots) / cfg.batch_size
        loss_sum, epe_sum, n_valid = distributed.all_sum(
            [float(loss.detach()) * w, sum(m["epe"] * m["n_valid"] for m in parts if m["n_valid"]),
             float(sum(m["n_valid"] for m in parts))], denv, dev)
        if not np.isfinite(loss_sum):
            raise MotionRefineError(f"non-finite loss at step {s + 1}; training diverged")
        if shards.n == 1:
            loss.backward()  # under DDP: gradients averaged over the ranks
        clip_and_step(model, optimizer, scheduler, cfg.clip)
        epe = epe_sum / n_valid if n_valid else float("nan")
        return [f"{loss_sum:.6g}", f"{lr:.6g}", f"{epe:.6g}"]

    try:
        run.run(step, lambda a, b: make_loader(pairs, cfg, a, b, slots, focus),
                cfg.prefetch if cfg.num_workers == 0 else 0, cfg.checkpoint_every, cfg.keep_checkpoints, cfg.log_every)
    finally:
        shards.close()
    summary = {**run.progress(),
               "seconds_per_step": float(np.mean(run.step_seconds)) if run.step_seconds else None,
               "crop": list(crop), "pairs": len(pairs), "init_sha256": init_sha, "loss_tsv": str(run.tsv),
               "completed": run.completed}
    summary["processes"] = denv.world
    summary["shards"] = shards.n
    summary = run.finish(summary, lambda path: save_raft(model, path), config=cfg.to_dict(),
                         code_version=__version__, mode=cfg.mode)
    distributed.teardown(denv)
    return summary
