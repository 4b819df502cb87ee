"""Fine-tune the pre-trained RAFT on cycle-verified pseudo-labels (or on a self-supervised
baseline objective), resumable and deterministic.

Modes:
- ``labels`` (the recipe): RAFT sequence loss on the sparse pseudo-labels.
- ``photometric`` (baseline): occlusion-masked photometric loss + λ·edge-aware smoothness, both
  directions; the occlusion mask comes from a forward-backward check (UnFlow form) on the
  current model's final predictions, detached.
- ``cycle`` (baseline): forward-backward cycle-consistency loss, both directions.
The self-supervised losses see the frames without colour jitter (same crop and flips).

Determinism and resume: which pairs form batch s is a pure function of (seed, s), and each
sample's augmentation draws from ``np.random.default_rng([seed, s, slot])``, so a run that
resumes from a checkpoint at step s sees exactly the batches an uninterrupted run would.
Checkpoints (model, optimiser, scheduler, RNG states, step) go to ``out_dir/checkpoints``
atomically; the final weights go to ``out_dir/final.pth`` in the official layout.
Bitwise determinism is tested on the CPU; on CUDA, grid_sample's backward (used by the
correlation lookup and the baseline losses) accumulates atomically, so runs agree only closely.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import queue
import random
import re
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from motionrefine import __version__
from motionrefine.flow.augment import AugmentConfig, augment, crop_size
from motionrefine.flow.cycle import DEFAULT_SPEED_EDGES, check_speed_edges, fb_consistency
from motionrefine.core.device import pick_device
from motionrefine.core.errors import MotionRefineError
from motionrefine.flow.labels import TrainingPair, load_training_pairs
from motionrefine.flow.losses import cycle_loss, photometric_loss, sequence_loss, sequence_weights, smoothness_loss
from motionrefine.models.checkpoint import load_raft, save_raft
from motionrefine.flow.rebalance import speed_bin_weights
from motionrefine.core.store import open_group, write_text_atomic

log = logging.getLogger("motionrefine")

MODES = ("labels", "photometric", "cycle")
TSV_COLUMNS = ("step", "loss", "lr", "epe_to_label", "seconds")
# Fields that may change between a run and its resumption without changing the result.
RUNTIME_FIELDS = {"checkpoint_every", "keep_checkpoints", "num_workers", "prefetch", "device", "threads"}


@dataclass
class FinetuneConfig:
    mode: str = "labels"
    variant: str = "small"
    steps: int = 1000
    batch_size: int = 12
    lr: float = 1e-4
    weight_decay: float = 1e-4
    adam_eps: float = 1e-8
    schedule_extra_steps: int = 100  # OneCycleLR total_steps = steps + this (official: 1000 + 100)
    pct_start: float = 0.1
    clip: float = 5.0
    iters: int | None = None  # refinement iterations in training; None: 12 (small) / 32 (large, official)
    gamma: float = 0.85
    max_flow: float = 400.0
    seed: int = 125
    freeze_bn: bool = True
    shuffle: bool = False  # official: no shuffling (drop_last batches in index order)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    rebalance: bool = False  # per-pixel speed-bin weights (rebalance.speed_bin_weights)
    speed_bins: tuple[float, ...] = DEFAULT_SPEED_EDGES
    # photometric baseline
    smooth_weight: float = 0.1
    ssim_weight: float = 0.0
    edge_scale: float = 1.0
    occlusion_alpha: float = 0.01  # UnFlow constants, squared norms
    occlusion_beta: float = 0.5
    # runtime
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    num_workers: int = 0
    prefetch: int = 2
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self):
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig.from_dict(self.augment)
        self.speed_bins = tuple(check_speed_edges(self.speed_bins))
        if self.mode not in MODES:
            raise MotionRefineError(f"unknown fine-tuning mode {self.mode!r}; expected one of {MODES}")
        if self.variant not in ("small", "large"):
            raise MotionRefineError(f"unknown RAFT variant {self.variant!r}")
        for name in ("steps", "batch_size", "checkpoint_every", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise MotionRefineError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.iters is not None and self.iters < 1:
            raise MotionRefineError(f"iters must be >= 1, got {self.iters}")

    @property
    def train_iters(self) -> int:
        return self.iters if self.iters is not None else (32 if self.variant == "large" else 12)

    @classmethod
    def from_dict(cls, d: dict | None) -> "FinetuneConfig":
        """Build from a config mapping. A top-level ``crop`` (as in the workflow's config
        schema) is accepted as shorthand for ``augment.crop``."""
        d = dict(d or {})
        if "crop" in d:
            aug = dict(d.get("augment") or {})
            if "crop" in aug:
                raise MotionRefineError("crop given both at the top level and under augment")
            aug["crop"] = d.pop("crop")
            d["augment"] = aug
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise MotionRefineError(f"unknown fine-tuning config keys: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        d["speed_bins"] = list(self.speed_bins)
        return d


# ------------------------------------------------------------------ data

def batch_indices(n_items: int, batch_size: int, step: int, seed: int, shuffle: bool) -> list[int]:
    """Pair indices of batch ``step`` (0-based): epochs of ⌊n/B⌋ full batches (drop_last),
    each epoch in index order or in a permutation seeded by (seed, epoch). With fewer pairs
    than a batch (one stereo pair, say), each batch repeats them: the augmentation differs
    per slot, so repeats are not duplicates."""
    if n_items < 1:
        raise MotionRefineError("no training pairs")
    if n_items < batch_size:
        return [(step * batch_size + k) % n_items for k in range(batch_size)]
    per_epoch = n_items // batch_size
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_items) if shuffle else np.arange(n_items)
    return [int(i) for i in order[k * batch_size:(k + 1) * batch_size]]


class StepBatches:
    """Batch sampler yielding, for steps start..stop−1, lists of (step, slot, pair index) keys."""

    def __init__(self, n_items: int, cfg: FinetuneConfig, start: int, stop: int):
        self.n, self.cfg, self.start, self.stop = n_items, cfg, start, stop

    def __len__(self):
        return max(0, self.stop - self.start)

    def __iter__(self):
        for s in range(self.start, self.stop):
            idx = batch_indices(self.n, self.cfg.batch_size, s, self.cfg.seed, self.cfg.shuffle)
            yield [(s, slot, i) for slot, i in enumerate(idx)]


class PairDataset(Dataset):
    """Reads frames t, t+1 and the label of pair t from Zarr and augments them.

    Indexed by (step, slot, pair index) so augmentation randomness depends only on the seed
    and the position in training, not on worker scheduling.
    """

    def __init__(self, pairs: Sequence[TrainingPair], cfg: FinetuneConfig, keep_raw: bool = False):
        self.pairs = list(pairs)
        self.cfg = cfg
        self.keep_raw = keep_raw
        self._groups: dict[str, object] = {}

    def __len__(self):
        return len(self.pairs)

    def _group(self, path: str):
        g = self._groups.get(path)
        if g is None:
            g = self._groups[path] = open_group(path)
        return g

    def __getitem__(self, key):
        step, slot, i = key
        p = self.pairs[i]
        frames = self._group(p.frames)["frames"]
        lab = self._group(p.labels)
        img = np.asarray(frames[p.pair:p.pair + 2])
        if p.direction == "bw":
            img = img[::-1]
            flow = np.asarray(lab["flow_bw"][p.pair], dtype=np.float32)
            valid = np.asarray(lab["keep_bw"][p.pair], dtype=bool)
        else:
            flow = np.asarray(lab["flow"][p.pair], dtype=np.float32)
            valid = np.asarray(lab["keep"][p.pair], dtype=bool)
        rng = np.random.default_rng([self.cfg.seed, step, slot])
        out = augment(img[0], img[1], flow, valid, rng=rng, config=self.cfg.augment, keep_raw=self.keep_raw)
        out.pop("crop_origin")
        if self.cfg.rebalance:
            # Weights from the cropped label, so the bins are balanced within what is trained on.
            w = speed_bin_weights(out["flow"], out["valid"], self.cfg.speed_bins)
        else:
            w = out["valid"].astype(np.float32)
        out["weight"] = w
        res = {k: torch.from_numpy(np.ascontiguousarray(np.moveaxis(v, -1, 0) if v.ndim == 3 else v))
               for k, v in out.items()}
        return res


class _Prefetcher:
    """Loads the next batches in a background thread (for num_workers=0): zarr decoding and
    augmentation overlap the training step. Order is preserved, so results are unchanged."""

    def __init__(self, iterable: Iterable, depth: int):
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(iter(iterable),), daemon=True)
        self._t.start()

    def _put(self, msg) -> bool:
        """Put unless the consumer has gone (closed); never blocks forever."""
        while not self._stop.is_set():
            try:
                self._q.put(msg, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, it):
        try:
            for item in it:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as exc:  # surfaced in the training thread
            self._put(("error", exc))

    def __iter__(self):
        while True:
            kind, item = self._q.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item

    def close(self):
        self._stop.set()
        self._t.join(timeout=5)


def make_loader(pairs: Sequence[TrainingPair], cfg: FinetuneConfig, start: int, stop: int):
    ds = PairDataset(pairs, cfg, keep_raw=cfg.mode == "photometric")
    kw = {}
    if cfg.num_workers > 0:
        kw = {"prefetch_factor": max(1, cfg.prefetch), "persistent_workers": False}
    loader = DataLoader(ds, batch_sampler=StepBatches(len(ds), cfg, start, stop), num_workers=cfg.num_workers, **kw)
    if cfg.num_workers == 0 and cfg.prefetch > 0:
        return _Prefetcher(loader, cfg.prefetch)
    return loader


def optimizer_step(model, optimizer, scheduler, loss: torch.Tensor, clip: float, step: int) -> None:
    """One update: refuse a non-finite loss (training diverged), clip the gradient norm, step."""
    if not torch.isfinite(loss):
        raise MotionRefineError(f"non-finite loss at step {step + 1}; training diverged")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    scheduler.step()


def _common_crop(pairs: Sequence[TrainingPair], cfg: FinetuneConfig) -> tuple[int, int]:
    """One crop for every video (batches need one size): the configured crop, shrunk to fit
    the smallest video (multiples of 8), with a warning when it had to shrink."""
    sizes = {}
    for p in {q.frames for q in pairs}:
        shape = open_group(p)["frames"].shape
        sizes[p] = crop_size(shape[1], shape[2], cfg.augment.crop)
    common = (min(h for h, _ in sizes.values()), min(w for _, w in sizes.values()))
    if common != tuple(cfg.augment.crop):
        log.warning("crop %s does not fit every video (%s): training on %s crops",
                    tuple(cfg.augment.crop), sorted(set(sizes.values())), common)
    return common


# ------------------------------------------------------------------ losses per mode

def compute_loss(model, batch: dict, cfg: FinetuneConfig) -> tuple[torch.Tensor, dict]:
    img1, img2 = batch["img1"], batch["img2"]
    label, valid = batch["flow"], batch["valid"]
    iters = cfg.train_iters
    if cfg.mode == "labels":
        preds = model(img1, img2, iters=iters)
        return sequence_loss(preds, label, valid, batch["weight"], cfg.gamma, cfg.max_flow)

    b = img1.shape[0]
    # Both directions in one batch: they share the encoders' cost structure and BN state.
    preds = model(torch.cat([img1, img2]), torch.cat([img2, img1]), iters=iters)
    ws = sequence_weights(len(preds), cfg.gamma)
    loss = img1.new_zeros(())
    if cfg.mode == "photometric":
        raw1, raw2 = batch["raw1"], batch["raw2"]
        with torch.no_grad():
            ff, fb = preds[-1][:b], preds[-1][b:]
            vis_f = fb_consistency(ff, fb, cfg.occlusion_alpha, cfg.occlusion_beta, squared=True)[0]
            vis_b = fb_consistency(fb, ff, cfg.occlusion_alpha, cfg.occlusion_beta, squared=True)[0]
        for w_i, p in zip(ws, preds):
            ff, fb = p[:b], p[b:]
            term = (photometric_loss(raw1, raw2, ff, vis_f, cfg.ssim_weight)
                    + photometric_loss(raw2, raw1, fb, vis_b, cfg.ssim_weight)
                    + cfg.smooth_weight * (smoothness_loss(ff, raw1, cfg.edge_scale)
                                           + smoothness_loss(fb, raw2, cfg.edge_scale)))
            loss = loss + w_i * term
    else:  # cycle
        for w_i, p in zip(ws, preds):
            ff, fb = p[:b], p[b:]
            loss = loss + w_i * (cycle_loss(ff, fb) + cycle_loss(fb, ff))
    with torch.no_grad():
        _, metrics = sequence_loss([preds[-1][:b].detach()], label, valid, None, cfg.gamma, cfg.max_flow)
    return loss, metrics


# ------------------------------------------------------------------ checkpoints

_CKPT = re.compile(r"^step_(\d{6,})\.pt$")


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _CKPT.match(p.name))]
    return sorted(found)


def _rng_states() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_states(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _save_checkpoint(ckpt_dir: Path, step: int, model, optimizer, scheduler, meta: dict, keep: int) -> Path:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"step_{step:06d}.pt"
    tmp = ckpt_dir / f".{path.name}.tmp-{os.getpid()}"
    torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": _rng_states(), **meta}, tmp)
    os.replace(tmp, path)
    for _, old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def _result_config(cfg: FinetuneConfig) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_FIELDS}


def _pairs_digest(pairs: Sequence[TrainingPair]) -> str:
    return hashlib.sha256(json.dumps([(p.video, p.pair) for p in pairs]).encode()).hexdigest()


# ------------------------------------------------------------------ loss-curve log

def _prepare_tsv(path: Path, resume_step: int) -> None:
    """Keep the header and rows up to ``resume_step`` (a killed run may have logged steps
    past its last checkpoint; those are redone)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    if path.exists() and resume_step > 0:
        with open(path, newline="") as f:
            r = csv.reader(f, delimiter="\t")
            header = next(r, None)
            if header == list(TSV_COLUMNS):
                rows = [row for row in r if row and int(row[0]) <= resume_step]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(TSV_COLUMNS)
        w.writerows(rows)
    os.replace(tmp, path)


def read_loss_curve(path: str | os.PathLike):
    import pandas as pd

    return pd.read_csv(path, sep="\t")


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
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    tsv = Path(log_path) if log_path is not None else out / "loss.tsv"
    pairs = load_training_pairs(training_set)
    if not pairs:
        raise MotionRefineError("the training set has no pairs (no pixel passed the cycle check?)")
    crop = _common_crop(pairs, cfg)
    if crop != tuple(cfg.augment.crop):
        cfg = replace(cfg, augment=replace(cfg.augment, crop=crop))
    dev = pick_device(cfg.device, cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)

    model, init_sha = load_raft(init_checkpoint, cfg.variant, expected_sha256)
    model.to(dev)
    model.train()
    if cfg.freeze_bn:
        model.freeze_bn()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=cfg.steps + cfg.schedule_extra_steps, pct_start=cfg.pct_start,
        anneal_strategy="linear", cycle_momentum=False)
    meta = {"config": _result_config(cfg), "init_sha256": init_sha, "pairs_digest": _pairs_digest(pairs),
            "code_version": __version__}

    start = 0
    found = list_checkpoints(ckpt_dir)
    if found:
        step0, path = found[-1]
        state = torch.load(path, map_location=dev, weights_only=False)
        for key in ("config", "init_sha256", "pairs_digest"):
            if state.get(key) != meta[key]:
                raise MotionRefineError(
                    f"{path} was written by a different run ({key} differs); remove {ckpt_dir} to start over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_states(state["rng"])
        start = int(state["step"])
        log.info("resuming %s from step %d (%s)", out, start, path.name)
    _prepare_tsv(tsv, start)

    stop = cfg.steps if stop_at is None else max(start, min(cfg.steps, int(stop_at)))
    started = time.perf_counter()
    step_seconds = []
    if stop > start:
        loader = make_loader(pairs, cfg, start, stop)
        try:
            with open(tsv, "a", newline="") as f:
                writer = csv.writer(f, delimiter="\t", lineterminator="\n")
                t_prev = time.perf_counter()
                for step, batch in zip(range(start, stop), loader):
                    batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
                    lr = optimizer.param_groups[0]["lr"]
                    loss, metrics = compute_loss(model, batch, cfg)
                    optimizer_step(model, optimizer, scheduler, loss, cfg.clip, step)
                    done = step + 1
                    now = time.perf_counter()
                    step_seconds.append(now - t_prev)
                    writer.writerow([done, f"{loss.item():.6g}", f"{lr:.6g}", f"{metrics['epe']:.6g}",
                                     f"{now - t_prev:.4f}"])
                    f.flush()
                    t_prev = now
                    if done % cfg.checkpoint_every == 0 or done == stop:
                        _save_checkpoint(ckpt_dir, done, model, optimizer, scheduler, meta, cfg.keep_checkpoints)
        finally:
            if isinstance(loader, _Prefetcher):
                loader.close()
    elapsed = time.perf_counter() - started
    summary = {"steps_done": stop, "steps": cfg.steps, "resumed_from": start, "seconds": elapsed,
               "seconds_per_step": float(np.mean(step_seconds)) if step_seconds else None,
               "crop": list(crop), "pairs": len(pairs), "init_sha256": init_sha, "loss_tsv": str(tsv),
               "completed": stop >= cfg.steps}
    if stop >= cfg.steps:
        final = out / "final.pth"
        summary["final"] = str(final)
        summary["final_sha256"] = save_raft(model, final)
        info = {**summary, "config": cfg.to_dict(), "code_version": __version__, "mode": cfg.mode}
        write_text_atomic(out / "summary.json", json.dumps(info, indent=1, default=str))
    log.info("fine-tuning %s: steps %d→%d of %d in %.1f s", out, start, stop, cfg.steps, elapsed)
    return summary


def training_workdir(root: str | os.PathLike, inputs: Sequence[str | os.PathLike], settings: dict) -> Path:
    """Folder for one training's resumable state, named by a fingerprint of what changes the
    result (input files' bytes or Zarr metadata, settings), so a killed job resumes while new
    labels or settings start afresh. Training state of other fingerprints is removed."""
    h = hashlib.sha256()
    for item in inputs:
        p = Path(item)
        if p.is_dir():  # a Zarr store: its metadata documents (attrs carry provenance and stats)
            for meta in sorted(p.rglob("zarr.json")):
                h.update(str(meta.relative_to(p)).encode())
                h.update(meta.read_bytes())
        else:
            h.update(p.read_bytes())
    h.update(json.dumps({k: v for k, v in settings.items() if k not in ("threads", "device")}, sort_keys=True,
                        default=str).encode())
    root = Path(root)
    work = root / f"work-{h.hexdigest()[:16]}"
    for stale in root.glob("work-*"):
        if stale != work:
            log.info("removing training state of other inputs: %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
    return work
