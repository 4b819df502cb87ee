"""Fine-tune the PIPs tracker on its own verified pseudo-labels (method notes §3.5).

Recipe: from the pre-trained tracker, reproduce the verified forward tracks of each
S-frame window: PIPs sequence loss over the update iterations (γ = 0.8) plus the
correlation score-map loss (balanced BCE, positives at the rounded label / stride); no
visibility loss (every label point counts as visible). AdamW (lr 1e-5, weight decay 1e-4,
eps 1e-8), CosineAnnealingLR with T_max = steps + 200 optimiser steps, gradient clipping
at 5, gradient accumulation (official: 8 samples of 128 tracks per optimiser step).

A sample is up to ``tracks_per_sample`` tracks of one window of one video. Input
augmentation (the paper mentions it; the released tracking code has none — ``augment.no_aug``
switches it off) uses ``augment.AugmentConfig``: colour jitter (one draw for the whole clip,
or per frame with ``asymmetric_prob``), horizontal/vertical flips and a crop, with the tracks
transformed to match; crops are placed so that at least one track starts inside, and only
tracks whose first-frame point lies in the crop are trained on.

Determinism and resume as in ``finetune``: forward pass k = step·grad_acc + j uses sample
``order(epoch)[k mod n]`` and augmentation rng ``(seed, step, j)``; checkpoints in
``out_dir/checkpoints`` hold model, optimiser, scheduler and RNG states.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from motionrefine import __version__
from motionrefine.core.device import pick_device
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.mapping import from_mapping
from motionrefine.core.store import open_group
from motionrefine.flow.augment import AugmentConfig, apply_jitter, crop_size, jitter_params
from motionrefine.flow.guard import HoldOut
from motionrefine.models.checkpoint import load_state_strict
from motionrefine.models.pips import Pips, read_pips_state, save_pips, score_map_loss, sequence_loss
from motionrefine.models.pips.flowpips import FLOWPIPS_SIZE, chain_init, load_flowpips, sample_features, save_flowpips
from motionrefine.train import state
from motionrefine.train.loop import Training, optimizer_step

log = logging.getLogger("motionrefine")

TSV_COLUMNS = ("step", "loss", "seq_loss", "score_loss", "epe_to_label", "lr", "seconds")
RUNTIME_FIELDS = state.RUNTIME_FIELDS | {"log_every"}


def _default_augment() -> AugmentConfig:
    # No vertical flips by default: unlike flow pairs, tracked videos are rarely upside down.
    return AugmentConfig(vflip_prob=0.0)


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
    augment: AugmentConfig = field(default_factory=_default_augment)
    checkpoint_every: int = 25
    keep_checkpoints: int = 2
    log_every: int = 10  # a progress line every this many steps
    # flow-small: hold back the tracks that start in a lattice of blocks (flow.guard.HoldOut) and
    # keep the fine-tuned update only if it agrees better with them than the initial one did
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


# --------------------------------------------------------------------------- samples

@dataclass(frozen=True)
class TrackSample:
    labels: str
    frames: str
    window_start: int
    rows: tuple[int, ...]


def load_track_samples(label_paths: Sequence, frames_paths: Sequence | Mapping, tracks_per_sample: int = 128,
                       min_tracks: int = 8, seed: int = 0, holdout: HoldOut | None = None,
                       held: bool = False) -> list[TrackSample]:
    """Chunk every labels store's tracks, per window, into samples of ``tracks_per_sample``
    (rows shuffled within the window by ``seed`` so a chunk mixes seeds and dense tracks; a
    last chunk smaller than ``min_tracks`` is dropped). ``frames_paths``: a list parallel to
    ``label_paths`` or a mapping from the labels' ``video`` attr to the frames store.
    ``holdout``: only the tracks whose first point lies outside its blocks (``held``: inside)."""
    label_paths = [str(p) for p in label_paths]
    if not isinstance(frames_paths, Mapping) and len(frames_paths) != len(label_paths):
        raise MotionRefineError(f"{len(label_paths)} label stores but {len(frames_paths)} frames stores")
    out = []
    for i, lp in enumerate(label_paths):
        g = open_group(lp)
        if "tracks" not in g or "window_start" not in g:
            raise MotionRefineError(f"{lp} is not a track-labels store (no tracks/window_start)")
        if isinstance(frames_paths, Mapping):
            video = g.attrs.get("video")
            if video not in frames_paths:
                raise MotionRefineError(f"{lp}: no frames store given for video {video!r}")
            fp = str(frames_paths[video])
        else:
            fp = str(frames_paths[i])
        T = open_group(fp)["frames"].shape[0]
        ws = np.asarray(g["window_start"][...], np.int64)
        S = g["tracks"].shape[1]
        if len(ws) and ws.max() + S > T:
            raise MotionRefineError(f"{lp}: windows reach frame {ws.max() + S - 1} but {fp} has {T} frames")
        chosen = np.ones(len(ws), bool)
        if holdout is not None:
            H, W = open_group(fp)["frames"].shape[1:3]
            xy = np.asarray(g["tracks"][:, 0], np.float64)
            x = np.clip(np.round(xy[:, 0]), 0, W - 1).astype(np.int64)
            y = np.clip(np.round(xy[:, 1]), 0, H - 1).astype(np.int64)
            chosen = holdout.mask(H, W)[y, x] == held
        for w0 in np.unique(ws):
            rows = np.flatnonzero((ws == w0) & chosen)
            rows = rows[np.random.default_rng([seed, i, int(w0)]).permutation(len(rows))]
            for c in range(0, len(rows), tracks_per_sample):
                chunk = rows[c:c + tracks_per_sample]
                if len(chunk) >= min_tracks:
                    out.append(TrackSample(lp, fp, int(w0), tuple(int(r) for r in chunk)))
    return out


def sample_index(k: int, n: int, seed: int, shuffle: bool) -> int:
    """Sample used by forward pass k: epochs over all n samples, each permuted by (seed, epoch)."""
    epoch, pos = divmod(k, n)
    return int(np.random.default_rng([seed, epoch]).permutation(n)[pos]) if shuffle else pos


# --------------------------------------------------------------------------- augmentation

def augment_clip(frames: np.ndarray, tracks: np.ndarray, rng: np.random.Generator,
                 cfg: AugmentConfig | None = None) -> dict:
    """Augment an S-frame clip (S, H, W, 3) uint8 and its tracks (S, N, 2) px.

    Returns frames (S, h, w, 3) float32 0–255, tracks (S, M, 2) in the output frame's pixels,
    ``keep`` (N,) bool (tracks whose first point lies inside the crop, the M returned),
    ``crop_origin`` (y0, x0) and the flips applied."""
    cfg = cfg or _default_augment()
    S, H, W = frames.shape[:3]
    tr = np.asarray(tracks, np.float64).copy()
    img = frames.astype(np.float32) / 255.0
    if not cfg.no_aug:
        if rng.random() < cfg.asymmetric_prob:
            img = np.stack([apply_jitter(f, jitter_params(cfg, rng)) for f in img])
        else:
            # One draw for the whole clip, as one image (one contrast mean): appearance stays
            # consistent along the tracks.
            img = apply_jitter(img.reshape(S * H, W, 3), jitter_params(cfg, rng)).reshape(S, H, W, 3)
    img = img * 255.0
    hf = vf = False
    if not cfg.no_aug:
        if rng.random() < cfg.hflip_prob:
            hf = True
            img = img[:, :, ::-1]
            tr[..., 0] = (W - 1) - tr[..., 0]
        if rng.random() < cfg.vflip_prob:
            vf = True
            img = img[:, ::-1]
            tr[..., 1] = (H - 1) - tr[..., 1]
    ch, cw = crop_size(H, W, cfg.crop)
    start = tr[0] if tr.shape[1] else np.zeros((0, 2))
    if cfg.random_crop:
        if len(start):
            # Place the crop so that a random track starts inside it.
            x, y = start[int(rng.integers(len(start)))]
            xlo, xhi = max(0, int(np.ceil(x - cw + 1))), min(int(np.floor(x)), W - cw)
            ylo, yhi = max(0, int(np.ceil(y - ch + 1))), min(int(np.floor(y)), H - ch)
            x0 = int(rng.integers(xlo, xhi + 1)) if xhi >= xlo else int(rng.integers(0, W - cw + 1))
            y0 = int(rng.integers(ylo, yhi + 1)) if yhi >= ylo else int(rng.integers(0, H - ch + 1))
        else:
            x0, y0 = int(rng.integers(0, W - cw + 1)), int(rng.integers(0, H - ch + 1))
    else:
        y0, x0 = (H - ch) // 2, (W - cw) // 2
    img = np.ascontiguousarray(img[:, y0:y0 + ch, x0:x0 + cw], dtype=np.float32)
    tr -= np.array([x0, y0], np.float64)
    keep = (start[:, 0] - x0 >= 0) & (start[:, 0] - x0 <= cw - 1) & (start[:, 1] - y0 >= 0) & (start[:, 1] - y0 <= ch - 1)
    return {"frames": img, "tracks": tr[:, keep].astype(np.float32), "keep": keep, "crop_origin": (y0, x0),
            "hflip": hf, "vflip": vf}


def load_sample(sample: TrackSample, cache: dict) -> tuple[np.ndarray, np.ndarray]:
    """(frames (S, H, W, 3) uint8, tracks (S, n, 2) float32) of a sample."""
    for p in (sample.labels, sample.frames):
        if p not in cache:
            cache[p] = open_group(p)
    lab = cache[sample.labels]
    rows = np.asarray(sample.rows)
    order = np.argsort(rows)  # zarr orthogonal indexing wants increasing indices
    tr = np.empty((len(rows),) + lab["tracks"].shape[1:], np.float32)
    tr[order] = lab["tracks"].get_orthogonal_selection((rows[order], slice(None), slice(None)))
    S = tr.shape[1]
    frames = np.asarray(cache[sample.frames]["frames"][sample.window_start:sample.window_start + S])
    return frames, tr.transpose(1, 0, 2)


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

class WindowInputs:
    """The frozen part of FlowPips per (frames store, window start): the student's flow and
    features of the whole video, computed once per video (RAFT is frozen, so every step reuses them)."""

    def __init__(self, model):
        self.model, self.videos = model, {}

    def get(self, frames_path: str, frames: np.ndarray, start: int):
        if frames_path not in self.videos:
            video = np.asarray(open_group(frames_path)["frames"][...])
            self.videos[frames_path] = self.model.flow_and_features(video) + (video.shape[1:3],)
        fw, bw, feats, offset, size = self.videos[frames_path]
        S = self.model.cfg.S
        return fw[start:start + S - 1], bw[start:start + S - 1], feats[start:start + S], offset, size


def flowpips_track_loss(model, inputs: WindowInputs, sample: TrackSample, tracks: np.ndarray,
                        gamma: float, iters: int | None = None) -> tuple[torch.Tensor, dict]:
    """Sequence loss of FlowPips on one window's label tracks (S, n, 2) px (frames 1..S−1; the
    label's frame 0 is the anchor), initialised by the student's chained flow from there."""
    fw, bw, feats, offset, size = inputs.get(sample.frames, None, sample.window_start)
    S = model.cfg.S
    xy = torch.from_numpy(np.asarray(tracks[0], np.float64)).to(model.device)
    init, err, ok = chain_init(fw, bw, list(range(S)), xy, size, model.cfg.fb_alpha, model.cfg.fb_beta)
    template = sample_features(feats[0], xy, offset)
    preds, _ = model.update(feats[None], template[None], init[None].float(), err[None].float(), ok[None], offset,
                            size, iters, all_iters=True)
    target = torch.from_numpy(np.asarray(tracks, np.float32))[None].to(model.device)
    valid = torch.ones(target.shape[:3], device=target.device)
    valid[:, 0] = 0
    loss = sequence_loss(preds, target, valid, gamma)
    with torch.no_grad():
        epe = torch.linalg.vector_norm(preds[-1] - target, dim=-1)[:, 1:].mean().item()
        epe0 = torch.linalg.vector_norm(init[None].float() - target, dim=-1)[:, 1:].mean().item()
    return loss, {"seq_loss": loss.item(), "epe": epe, "epe_init": epe0}


@torch.no_grad()
def held_back_epe(model, inputs: WindowInputs, samples: Sequence[TrackSample], cache: dict,
                  iters: int | None) -> float:
    """Mean distance (px, frames 1..S−1, over tracks) of the tracker to held-back label tracks."""
    total, count = 0.0, 0
    for smp in samples:
        _, tracks = load_sample(smp, cache)
        _, m = flowpips_track_loss(model, inputs, smp, tracks, 0.8, iters)
        total += m["epe"] * len(smp.rows)
        count += len(smp.rows)
    return total / count if count else float("nan")


def _guard_update(c: TrackFinetuneConfig, model, initial: dict, inputs, held, cache) -> dict:
    """Keep the fine-tuned update iff it is closer to the held-back tracks than ``initial`` (the
    update it started from) by more than ``guard_margin``; otherwise put ``initial`` back."""
    if not held:
        return {"keep_refined": True, "held_tracks": 0, "reason": "no held-back tracks"}
    trained = {k: v.detach().clone() for k, v in model.mixer.state_dict().items()}
    refined = held_back_epe(model, inputs, held, cache, c.iters)
    model.mixer.load_state_dict(initial)
    before = held_back_epe(model, inputs, held, cache, c.iters)
    keep = bool(refined < before * (1.0 - c.guard_margin))
    if keep:
        model.mixer.load_state_dict(trained)
    log.info("tracker guard: held-back EPE %.4f (initial update) -> %.4f (fine-tuned) on %d tracks: %s",
             before, refined, sum(len(s.rows) for s in held), "keep the fine-tuned update" if keep else
             "keep the initial update")
    return {"keep_refined": keep, "held_tracks": int(sum(len(s.rows) for s in held)),
            "held_epe_initial": before, "held_epe_refined": refined, "margin": c.guard_margin}


def _finetune_flowpips(c: TrackFinetuneConfig, samples, held, init_checkpoint, raft_checkpoint, backbone, out_dir,
                       stop_at, expected_sha256, dev):
    """FlowPips: only the update (mixer) trains; the frozen RAFT's flow and features are
    computed once per video. No input augmentation (it would change the frozen inputs; the
    official tracking code has none either). ``held``: the guard's held-back samples."""
    model, init_sha = load_flowpips(init_checkpoint, raft_checkpoint, expected_sha256)
    backbone_sha = model.load_raft(backbone) if backbone is not None else None
    initial = {k: v.detach().clone() for k, v in model.mixer.state_dict().items()}
    model.to(dev).train()
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay, eps=c.adam_eps)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=c.steps + c.t_max_extra)
    identity = {"config": state.result_config(c.to_dict(), RUNTIME_FIELDS), "init_sha256": init_sha,
                "samples_digest": _samples_digest(samples), "backbone_sha256": backbone_sha}
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
    guard = _guard_update(c, model, initial, inputs, held, cache) if c.guard and run.completed else None
    summary = {**run.progress(), "samples": len(samples), "tracks": int(sum(len(s.rows) for s in samples)),
               "init_sha256": init_sha, "raft_sha256": model.raft_sha256, "loss_tsv": str(run.tsv),
               "completed": run.completed, "guard": guard}
    return run.finish(summary, lambda path: save_flowpips(model, path), config=c.to_dict(), code_version=__version__)


def _samples_digest(samples: Sequence[TrackSample]) -> str:
    key = [(Path(s.labels).name, s.window_start, len(s.rows)) for s in samples]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


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
    samples = load_track_samples(label_paths, frames_paths, c.tracks_per_sample, c.min_tracks, c.seed, holdout)
    if not samples:
        raise MotionRefineError("no training samples: the label stores hold no window with "
                                f">= {c.min_tracks} verified tracks")
    dev = pick_device(c.device, c.threads)
    state.seed_everything(c.seed)
    if flowpips:
        held = load_track_samples(label_paths, frames_paths, c.tracks_per_sample, 1, c.seed, holdout,
                                  held=True) if holdout else []
        return _finetune_flowpips(c, samples, held, init_checkpoint, raft_checkpoint, backbone, out_dir, stop_at,
                                  expected_sha256, dev)

    weights, init_sha = read_pips_state(init_checkpoint, expected_sha256)
    model = Pips(c.size, **({"stride": c.stride} if c.stride else {}))
    load_state_strict(model, weights, str(init_checkpoint))
    model.to(dev).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay, eps=c.adam_eps)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=c.steps + c.t_max_extra)
    identity = {"config": state.result_config(c.to_dict(), RUNTIME_FIELDS), "init_sha256": init_sha,
                "samples_digest": _samples_digest(samples)}
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
