"""Supervised pre-training of the tracker (PIPs, or FlowPips on the frozen RAFT-small) on the
procedural synthetic sequences of ``track.synthetic`` (CPU-sized).

Loss (PIPs): sequence loss over the update iterations (γ = 0.8, mean |Δx|, |Δy| over points
inside the frame, occluded ones included, as PIPs supervises trajectories through
occlusions) plus balanced BCE on the visibility logits (optionally the score-map loss).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from dataclasses import asdict, dataclass

import cv2
import torch

from motionrefine import __version__
from motionrefine.core.device import pick_device
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.mapping import from_mapping
from motionrefine.models.pips import Pips, balanced_bce, save_pips, score_map_loss, sequence_loss
from motionrefine.models.pips.flowpips import FLOWPIPS_SIZE, FlowPips, chain_init, load_flowpips, sample_features, save_flowpips
from motionrefine.track.synthetic import make_batch
from motionrefine.train import state
from motionrefine.train.loop import Training, optimizer_step

log = logging.getLogger("motionrefine")

PRETRAIN_COLUMNS = ("step", "loss", "coord_loss", "vis_loss", "epe_vis", "lr", "seconds")
RUNTIME_FIELDS = state.RUNTIME_FIELDS | {"log_every", "prefetch"}


# --------------------------------------------------------------------------- config

@dataclass
class PretrainConfig:
    size: str = "small"            # PipsConfig.size, or "flow-small" (FlowPips on the frozen RAFT-small)
    raft_checkpoint: str | None = None  # flow-small: the RAFT-small weights its flow and features come from
    S: int = 8
    height: int = 128
    width: int = 160
    n_tracks: int = 64
    iters: int = 4                 # update iterations in training (inference default: 6)
    steps: int = 1000
    batch_size: int = 1
    lr: float = 5e-4
    weight_decay: float = 1e-4
    pct_start: float = 0.05        # OneCycle warm-up fraction
    clip: float = 5.0
    gamma: float = 0.8
    vis_weight: float = 1.0
    score_weight: float = 0.0      # score-map (heatmap) BCE; off by default (costly on the CPU)
    seed: int = 0
    # scene distribution (frame px, per frame), see synth.SynthConfig
    layers: tuple = (1, 4)
    camera_motion: float = 4.0     # upper end; each sequence draws uniformly below it
    layer_speed: float = 6.0
    nonrigid_prob: float = 0.3
    nonrigid_amplitude: float = 2.0
    photometric_prob: float = 0.3
    coord_clamp: float | None = None  # flow-small: per-point error cap (px) in the coordinate loss
    coord_visible_only: bool = False  # flow-small: coordinate loss on visible points only
    train_coords: bool = True      # flow-small: False keeps the update's position output at zero (visibility only)
    vis_balanced: bool = True      # flow-small: balanced BCE (PIPs) or plain BCE (calibrated for accuracy)
    reuse: int = 1                 # flow-small: steps sharing one rendered sequence (and its RAFT flow),
                                   # each with its own n_tracks of the n_tracks·reuse rendered tracks
    # runtime
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 50
    prefetch: int = 2              # batches rendered ahead in a background thread (0: inline)
    device: str = "auto"
    threads: int | None = 1

    def __post_init__(self):
        self.layers = tuple(self.layers) if isinstance(self.layers, (list, tuple)) else self.layers
        for name in ("steps", "batch_size", "n_tracks", "iters", "checkpoint_every", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise MotionRefineError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.height < 32 or self.width < 32:
            raise MotionRefineError(f"frames must be at least 32x32, got {self.height}x{self.width}")
        if self.S < 3:
            raise MotionRefineError(f"S must be >= 3, got {self.S}")
        if self.size == FLOWPIPS_SIZE and not self.raft_checkpoint:
            raise MotionRefineError("size flow-small needs raft_checkpoint (the RAFT-small weights)")

    @classmethod
    def from_dict(cls, d: dict | None) -> "PretrainConfig":
        return from_mapping(cls, d, "pre-training config")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


# --------------------------------------------------------------------------- loss

def pretrain_loss(model: Pips, batch: dict, cfg: PretrainConfig) -> tuple[torch.Tensor, dict]:
    out = model(batch["trajs"][:, 0], batch["rgbs"], iters=cfg.iters,
                return_heatmaps=cfg.score_weight > 0)
    coord = sequence_loss(out.coords, batch["trajs"], batch["valid"], cfg.gamma)
    vis = balanced_bce(out.vis, batch["vis"], batch["valid"])
    loss = coord + cfg.vis_weight * vis
    if cfg.score_weight > 0:
        loss = loss + cfg.score_weight * score_map_loss(out.heatmaps, batch["trajs"] / model.stride,
                                                        batch["vis"], batch["valid"])
    with torch.no_grad():
        m = batch["valid"] * batch["vis"]
        err = torch.linalg.vector_norm(out.coords[-1] - batch["trajs"], dim=-1)
        epe = float((err * m).sum() / m.sum().clamp(min=1))
    return loss, {"coord_loss": coord.item(), "vis_loss": vis.item(), "epe_vis": epe}


@torch.no_grad()
def flowpips_inputs(model: FlowPips, batch: dict) -> dict:
    """The frozen part of a FlowPips step: per sequence, the student's flow and features, the
    chained-flow initialisation from the true frame-0 positions, its forward-backward errors
    and checks, and the query features (all without gradient). Adds them to ``batch``."""
    rgbs = batch["rgbs"]
    b, s, _, H, W = rgbs.shape
    out = {k: [] for k in ("feats", "template", "init", "fb_err", "fb_ok")}
    offset = None
    for i in range(b):
        frames = rgbs[i].permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        fw, bw, feats, offset = model.flow_and_features(frames)
        xy = batch["trajs"][i, 0].to(model.device, torch.float64)
        init, err, ok = chain_init(fw, bw, list(range(s)), xy, (H, W), model.cfg.fb_alpha, model.cfg.fb_beta)
        out["feats"].append(feats)
        out["template"].append(sample_features(feats[0], xy, offset))
        out["init"].append(init.float())
        out["fb_err"].append(err.float())
        out["fb_ok"].append(ok)
    return {**batch, **{k: torch.stack(v) for k, v in out.items()}, "offset": offset}


def flowpips_batches(model: FlowPips, cfg: PretrainConfig, start: int, stop: int):
    """Batches of steps start..stop−1: sequence ⌊step / reuse⌋ (rendered with n_tracks·reuse
    tracks, its frozen inputs computed once), tracks slice step mod reuse. A pure function of
    the step, so a resumed run sees the same data."""
    per_track = ("trajs", "vis", "valid", "init", "fb_err", "fb_ok")
    big = PretrainConfig.from_dict({**cfg.to_dict(), "n_tracks": cfg.n_tracks * cfg.reuse})
    cached, full = None, None
    for s in range(start, stop):
        g, k = divmod(s, cfg.reuse)
        if g != cached:
            full, cached = flowpips_inputs(model, make_batch(big, g)), g
        sl = slice(k * cfg.n_tracks, (k + 1) * cfg.n_tracks)
        batch = dict(full)
        for key in per_track:
            batch[key] = full[key][:, :, sl]
        batch["template"] = full["template"][:, sl]
        yield batch


def flowpips_loss(model: FlowPips, batch: dict, cfg: PretrainConfig, valid=None) -> tuple[torch.Tensor, dict]:
    """Sequence loss (γ) on frames 1..S−1 plus balanced visibility BCE; ``batch`` from ``flowpips_inputs``."""
    H, W = batch["rgbs"].shape[-2:]
    preds, vis = model.update(batch["feats"], batch["template"], batch["init"], batch["fb_err"], batch["fb_ok"],
                              batch["offset"], (H, W), cfg.iters, all_iters=True)
    valid = batch["valid"] if valid is None else valid
    valid = valid.clone()
    valid[:, 0] = 0  # frame 0 is the given anchor
    cvalid = valid * batch["vis"] if cfg.coord_visible_only else valid
    if cfg.coord_clamp is None:
        coord = sequence_loss(preds, batch["trajs"], cvalid, cfg.gamma)
    else:  # an error beyond the cap (a lost track) gives no gradient: it cannot pull the update around
        n = len(preds)
        coord = sum(cfg.gamma ** (n - 1 - i) * ((p - batch["trajs"]).abs().mean(-1).clamp(max=cfg.coord_clamp)
                                                 * cvalid).sum() / cvalid.sum().clamp(min=1)
                    for i, p in enumerate(preds)) / n
    if cfg.vis_balanced:
        vloss = balanced_bce(vis[:, 1:], batch["vis"][:, 1:], valid[:, 1:])
    else:
        bce = torch.nn.functional.binary_cross_entropy_with_logits(vis[:, 1:], batch["vis"][:, 1:], reduction="none")
        vloss = (bce * valid[:, 1:]).sum() / valid[:, 1:].sum().clamp(min=1)
    if not cfg.train_coords:
        coord = coord.detach()  # the position output stays at zero (its gradient is masked too)
    with torch.no_grad():
        m = valid * batch["vis"]
        err = torch.linalg.vector_norm(preds[-1] - batch["trajs"], dim=-1)
        err0 = torch.linalg.vector_norm(batch["init"] - batch["trajs"], dim=-1)
        epe = float((err * m).sum() / m.sum().clamp(min=1))
        epe0 = float((err0 * m).sum() / m.sum().clamp(min=1))
    return coord + cfg.vis_weight * vloss, {"coord_loss": coord.item(), "vis_loss": vloss.item(), "epe_vis": epe,
                                            "epe_init": epe0}


def _load_flowpips_or_training_checkpoint(path, cfg: PretrainConfig):
    """A FlowPips checkpoint, or a pre-training run's step checkpoint (``checkpoints/step_*.pt``,
    whose model is FlowPips as ``cfg`` builds it)."""
    from motionrefine.core.store import sha256_file
    from motionrefine.models.checkpoint import load_state_strict

    if Path(path).suffix != ".pt":
        return load_flowpips(path, cfg.raft_checkpoint)
    # a run's own step checkpoint holds RNG states too, so it is read the way train.state.resume reads it
    obj = torch.load(path, map_location="cpu", weights_only=False)
    digest = sha256_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        model = FlowPips.from_raft(cfg.raft_checkpoint, S=cfg.S, iters=cfg.iters)
        load_state_strict(model, obj["model"], str(path))
        return model, digest
    raise MotionRefineError(f"{path} is not a pre-training step checkpoint (no 'model' state)")


def _pretrain_flowpips(cfg: PretrainConfig, out_dir, stop_at, dev, init_checkpoint=None) -> dict:
    if init_checkpoint is not None:  # e.g. a second phase with another loss
        model, init_sha = _load_flowpips_or_training_checkpoint(init_checkpoint, cfg)
        if model.cfg.S != cfg.S:
            raise MotionRefineError(f"{init_checkpoint}: S={model.cfg.S}, config S={cfg.S}")
    else:
        model, init_sha = FlowPips.from_raft(cfg.raft_checkpoint, S=cfg.S, iters=cfg.iters), None
    model.to(dev).train()
    params = model.trainable_parameters()
    if not cfg.train_coords:
        head = model.mixer.head
        with torch.no_grad():
            head.weight[:2] = 0.0
            head.bias[:2] = 0.0
        keep = torch.zeros(3, 1); keep[2] = 1.0
        head.weight.register_hook(lambda g: g * keep.to(g))
        head.bias.register_hook(lambda g: g * keep[:, 0].to(g))
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.steps + 1,
                                                    pct_start=cfg.pct_start, cycle_momentum=False,
                                                    anneal_strategy="cos")
    identity = {"config": state.result_config(cfg.to_dict(), RUNTIME_FIELDS), "init_sha256": init_sha}
    run = Training("pre-training", out_dir, model, optimizer, scheduler, identity,
                   PRETRAIN_COLUMNS[:-1] + ("epe_init", "seconds"), cfg.steps, dev, stop_at)

    def step(s: int, batch: dict) -> list[str]:
        lr = run.lr
        loss, metrics = flowpips_loss(model, batch, cfg)
        optimizer_step(model, optimizer, scheduler, [loss], cfg.clip, s)
        done = s + 1
        if done % cfg.log_every == 0 or done == run.stop:
            log.info("pretrain step %d/%d loss %.4f epe_vis %.3f (chained flow %.3f) lr %.2e (%.1f s elapsed)",
                     done, cfg.steps, loss.item(), metrics["epe_vis"], metrics["epe_init"], lr,
                     time.perf_counter() - run.started)
        return [f"{loss.item():.6g}", f"{metrics['coord_loss']:.6g}", f"{metrics['vis_loss']:.6g}",
                f"{metrics['epe_vis']:.6g}", f"{lr:.6g}", f"{metrics['epe_init']:.6g}"]

    # Rendering and the frozen RAFT run in the prefetch thread, overlapping the update's training step.
    run.run(step, lambda a, b: flowpips_batches(model, cfg, a, b), cfg.prefetch,
            cfg.checkpoint_every, cfg.keep_checkpoints)
    summary = {**run.progress(), "loss_tsv": str(run.tsv), "completed": run.completed,
               "parameters": sum(p.numel() for p in params)}
    return run.finish(summary, lambda path: save_flowpips(model, path), config=cfg.to_dict(),
                      code_version=__version__, torch=torch.__version__)


# --------------------------------------------------------------------------- main entry

def pretrain(config: PretrainConfig | dict, out_dir: str | os.PathLike, stop_at: int | None = None,
             init_checkpoint: str | os.PathLike | None = None) -> dict:
    """Train PIPs ``config.size`` from scratch (or from ``init_checkpoint``) on procedural
    synthetic sequences; resumes from the latest checkpoint in ``out_dir/checkpoints``.

    Writes ``out_dir/loss.tsv`` (one row per step), checkpoints every ``checkpoint_every``
    steps, and, once all steps ran, ``out_dir/final.pth`` ({'model_state_dict': ...}, loadable
    with ``load_pips(path, size)``) and ``out_dir/summary.json``. ``stop_at``: end this call
    after that many total steps (checkpoint written), e.g. to fit a job time limit.
    """
    cfg = config if isinstance(config, PretrainConfig) else PretrainConfig.from_dict(config)
    dev = pick_device(cfg.device, cfg.threads)
    if cfg.threads:
        cv2.setNumThreads(int(cfg.threads))  # the renderer's resizes/blurs share the CPU budget too
    state.seed_everything(cfg.seed)
    if cfg.size == FLOWPIPS_SIZE:
        return _pretrain_flowpips(cfg, out_dir, stop_at, dev, init_checkpoint)

    model = Pips(cfg.size, S=cfg.S)
    init_sha = None
    if init_checkpoint is not None:
        from motionrefine.models.pips import read_pips_state
        from motionrefine.models.checkpoint import load_state_strict

        weights, init_sha = read_pips_state(init_checkpoint)
        load_state_strict(model, weights, str(init_checkpoint))
    model.to(dev).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.steps + 1,
                                                    pct_start=cfg.pct_start, cycle_momentum=False,
                                                    anneal_strategy="cos")
    identity = {"config": state.result_config(cfg.to_dict(), RUNTIME_FIELDS), "init_sha256": init_sha}
    run = Training("pre-training", out_dir, model, optimizer, scheduler, identity, PRETRAIN_COLUMNS, cfg.steps, dev,
                   stop_at)

    def step(s: int, batch: dict) -> list[str]:
        batch = {k: v.to(dev) for k, v in batch.items()}
        lr = run.lr
        loss, metrics = pretrain_loss(model, batch, cfg)
        optimizer_step(model, optimizer, scheduler, [loss], cfg.clip, s)
        return [f"{loss.item():.6g}", f"{metrics['coord_loss']:.6g}", f"{metrics['vis_loss']:.6g}",
                f"{metrics['epe_vis']:.6g}", f"{lr:.6g}"]

    # Rendering (numpy/cv2) overlaps the training step in the prefetch thread; order, hence results, unchanged.
    run.run(step, lambda a, b: (make_batch(cfg, s) for s in range(a, b)), cfg.prefetch, cfg.checkpoint_every,
            cfg.keep_checkpoints, cfg.log_every)
    summary = {**run.progress(), "loss_tsv": str(run.tsv), "completed": run.completed,
               "parameters": sum(p.numel() for p in model.parameters())}
    return run.finish(summary, lambda path: save_pips(model, path), config=cfg.to_dict(), code_version=__version__,
                      torch=torch.__version__)
