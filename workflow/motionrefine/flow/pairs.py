"""RAFT fine-tuning data: which training pairs form batch s, and the augmented samples.

Which pairs form batch s is a pure function of (seed, s), and each sample's augmentation
draws from ``np.random.default_rng([seed, s, slot])``, so a resumed run sees exactly the
batches an uninterrupted run would, whatever the worker scheduling.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import open_group
from motionrefine.flow.augment import augment, crop_size
from motionrefine.flow.finetune_config import FinetuneConfig
from motionrefine.flow.holdout import HoldOut, read_split
from motionrefine.flow.trainset import TrainingPair
from motionrefine.flow.rebalance import speed_bin_weights

log = logging.getLogger("motionrefine")


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
    """Batch sampler yielding, for steps start..stop−1, lists of (step, slot, pair index) keys;
    ``slots``: the global batch slots this process trains on (default: all)."""

    def __init__(self, n_items: int, cfg: FinetuneConfig, start: int, stop: int, slots: range | None = None):
        self.n, self.cfg, self.start, self.stop = n_items, cfg, start, stop
        self.slots = range(cfg.batch_size) if slots is None else slots

    def __len__(self):
        return max(0, self.stop - self.start)

    def __iter__(self):
        for s in range(self.start, self.stop):
            idx = batch_indices(self.n, self.cfg.batch_size, s, self.cfg.seed, self.cfg.shuffle)
            yield [(s, slot, idx[slot]) for slot in self.slots]


class PairDataset(Dataset):
    """Reads frames t, t+1 and the label of pair t from Zarr and augments them; with a
    hold-out (``cfg.holdout_every``), only the label pixels its split trains on are valid.

    Indexed by (step, slot, pair index) so augmentation randomness depends only on the seed
    and the position in training, not on worker scheduling.
    """

    def __init__(self, pairs: Sequence[TrainingPair], cfg: FinetuneConfig, keep_raw: bool = False,
                 focus: Sequence[np.ndarray] | None = None):
        """``focus``: per pair, (H, W) loss weights on its training pixels (``flow.focus``)."""
        self.pairs = list(pairs)
        self.cfg = cfg
        self.keep_raw = keep_raw
        self.focus = focus
        self.holdout = HoldOut(cfg.holdout_block, cfg.holdout_every) if cfg.holdout_every else None
        self._groups: dict[str, object] = {}

    def __len__(self):
        return len(self.pairs)

    def _group(self, path: str):
        g = self._groups.get(path)
        if g is None:
            g = self._groups[path] = open_group(path)
        return g

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pair i before augmentation: frames (2, H, W, 3) in its direction's order, label flow
        (H, W, 2) and the pixels training may use (H, W) bool."""
        p = self.pairs[i]
        frames = self._group(p.frames)["frames"]
        lab = self._group(p.labels)
        img = np.asarray(frames[p.pair:p.pair + 2])
        if self.holdout is not None:
            # The guard's split (flow.holdout): held regions and their bands, in both directions.
            fw, bw, split = read_split(lab, p.pair, self.holdout, p.labels)
            flow, valid = (bw if p.direction == "bw" else fw), split.train(p.direction)
        else:
            name = "_bw" if p.direction == "bw" else ""
            flow = np.asarray(lab["flow" + name][p.pair], dtype=np.float32)
            valid = np.asarray(lab["keep" + name][p.pair], dtype=bool)
        if p.direction == "bw":
            img = img[::-1]
        return img, flow, valid

    def __getitem__(self, key):
        step, slot, i = key
        img, flow, valid = self.read(i)
        rng = np.random.default_rng([self.cfg.seed, step, slot])
        focus = None if self.focus is None else self.focus[i]
        out = augment(img[0], img[1], flow, valid, focus, rng=rng, config=self.cfg.augment, keep_raw=self.keep_raw,
                      weighted_crop=self.cfg.focus_crops)
        out.pop("crop_origin")
        if self.cfg.rebalance:
            # Weights from the cropped label, so the bins are balanced within what is trained on.
            w = speed_bin_weights(out["flow"], out["valid"], self.cfg.speed_bins)
        else:
            w = out["valid"].astype(np.float32)
        if focus is not None:
            w = w * out.pop("weight")
        out["weight"] = w
        res = {k: torch.from_numpy(np.ascontiguousarray(np.moveaxis(v, -1, 0) if v.ndim == 3 else v))
               for k, v in out.items()}
        return res


def make_loader(pairs: Sequence[TrainingPair], cfg: FinetuneConfig, start: int, stop: int,
                slots: range | None = None, focus: Sequence[np.ndarray] | None = None) -> DataLoader:
    """Batches of steps start..stop−1, in order (``cfg.num_workers`` worker processes);
    ``slots``: this process's slice of each global batch (distributed training); ``focus``:
    the pairs' loss weights (``flow.focus``)."""
    ds = PairDataset(pairs, cfg, keep_raw=cfg.mode != "labels", focus=focus)
    kw = {}
    if cfg.num_workers > 0:
        kw = {"prefetch_factor": max(1, cfg.prefetch), "persistent_workers": False}
    return DataLoader(ds, batch_sampler=StepBatches(len(ds), cfg, start, stop, slots), num_workers=cfg.num_workers,
                      **kw)


def common_crop(pairs: Sequence[TrainingPair], cfg: FinetuneConfig) -> tuple[int, int]:
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
