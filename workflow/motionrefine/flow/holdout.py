"""Which verified label pixels train the student and which judge it: one split per pair,
made by :meth:`HoldOut.split` for fine-tuning (``flow.pairs``) and the guard (``flow.guard``)
alike, so the two cannot drift apart.

A held region is a set of scene points, not a pixel pattern per direction. For the pair
(t, t+1) it is the lattice cells of :class:`HoldOut` in frame t and their image in frame t+1
under the label flow:

- scored forward: the verified forward labels at lattice pixels x of frame t;
- scored backward: the verified backward labels at y of frame t+1 whose target y + B(y) lies,
  with its whole bilinear footprint (the 4 pixels around it), inside the lattice;
- held zone of frame t: the lattice; held zone of frame t+1: the footprints of the scored
  forward targets x + F(x), and every verified backward pixel whose target footprint touches
  the lattice (held; scored only when wholly inside);
- trained on: a verified label whose source pixel lies more than ``band`` px (Chebyshev) from
  its own frame's held zone and whose target footprint lies more than ``band`` px from the
  other frame's held zone. The band is neither trained on nor scored.

So every trained label, source and target, lies at least ``band`` + 1 px (Chebyshev, hence
Euclidean) from every scored label's source and target in the same frame, whether or not the
two directions' labels agree. The old split (the lattice in each direction's own grid) let a
held forward pixel x train through the backward label at x + F(x) whenever |F| carried it out
of its block. The default band, 8 px, is one cell of RAFT's 1/8 grid: no trained pixel shares
a 1/8 cell with a held one. The network still spreads information further (its context
encoder and the GRU's convolutions reach across many cells); no finite band removes that, and
at test time it is what lets the student fill the pixels it has no label for.

Whole pairs are not held back, by choice: where every pair of a video is labelled (the default
sample videos), a held pair shares a frame and nearly all its correspondences with the trained
pairs beside it, so it would need a band of dropped pairs on either side; where the label
budget spreads a few pairs over a long clip (6 for a 60-frame 960x540 clip), one held pair
costs a sixth of the labels and leaves the video's interval resting on one pair's content,
while blocks sample every labelled pair. And the deliverable is the flow of these same frames:
the question is how the fine-tune does on their pixels it never trained on. What neither
removes, and the guard does not measure: a scene point held in pair t may be trained on in
pair t+k after it has moved out of its block. Blocks are fixed in image coordinates, so a
slowly moving point stays held for several pairs, and the guard's bootstrap units are whole
lattice cells over all pairs of a video (``flow.verdict``), not (pair, cell).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from motionrefine.core.errors import MotionRefineError

BAND = 8  # px: one cell of RAFT's 1/8 grid


@dataclass(frozen=True)
class HoldOut:
    block: int = 16   # px side of a held-back block
    every: int = 11   # one block in `every` is held back (with the band, ~62 % of pixels still train)
    band: int = BAND  # px around a held region that is neither trained on nor scored

    def __post_init__(self):
        if self.block < 1 or self.every < 2 or self.band < 0:
            raise MotionRefineError(f"hold-out needs block >= 1, every >= 2 and band >= 0, got block {self.block}, "
                                    f"every {self.every}, band {self.band}")

    def cells(self, height: int, width: int) -> np.ndarray:
        """(H, W) int64: the index of each pixel's block (row-major over the block grid)."""
        nx = -(-width // self.block)
        by = np.arange(height)[:, None] // self.block
        bx = np.arange(width)[None, :] // self.block
        return by * nx + bx

    def n_cells(self, height: int, width: int) -> int:
        return -(-height // self.block) * -(-width // self.block)

    def mask(self, height: int, width: int) -> np.ndarray:
        """(H, W) bool, True on the lattice of held-back blocks (in frame t of a pair).

        Blocks on a diagonal lattice, so every image region and both axes are sampled and a
        crop of any position keeps about 1/every of them."""
        by = np.arange(height)[:, None] // self.block
        bx = np.arange(width)[None, :] // self.block
        return (by + 2 * bx) % self.every == 0

    def split(self, flow_fw: np.ndarray, keep_fw: np.ndarray, flow_bw: np.ndarray,
              keep_bw: np.ndarray) -> "PairSplit":
        """The (train, score) masks of one pair in both directions from its labels: flow_*
        (H, W, 2) (u, v) px, keep_* (H, W) bool; flow_bw and keep_bw live in frame t+1."""
        kf, kb = _check(flow_fw, keep_fw, flow_bw, keep_bw)
        h, w = kf.shape
        lattice = self.mask(h, w)
        score_fw = kf & lattice
        yb, xb = np.nonzero(kb)
        cy, cx, inside = _footprint(yb, xb, flow_bw, h, w)
        in_lattice = np.zeros(cy.shape, bool)
        in_lattice[inside] = lattice[cy[inside], cx[inside]]
        wholly = in_lattice.all(1)
        touches = in_lattice.any(1)
        score_bw = np.zeros((h, w), bool)
        score_bw[yb[wholly], xb[wholly]] = True
        zone_t1 = np.zeros((h, w), bool)
        zone_t1[yb[touches], xb[touches]] = True
        yf, xf = np.nonzero(score_fw)
        fy, fx, finside = _footprint(yf, xf, flow_fw, h, w)
        zone_t1[fy[finside], fx[finside]] = True
        near_t, near_t1 = dilate(lattice, self.band), dilate(zone_t1, self.band)
        train_fw = kf & ~near_t & ~_lands_in(near_t1, flow_fw, kf)
        train_bw = kb & ~near_t1 & ~_lands_in(near_t, flow_bw, kb)
        cells = self.cells(h, w)
        unit_fw = np.where(score_fw, cells, -1)
        unit_bw = np.full((h, w), -1, np.int64)
        unit_bw[score_bw] = cells[_target_pixel(flow_bw, score_bw)]
        return PairSplit(train_fw, score_fw, train_bw, score_bw, unit_fw, unit_bw)


@dataclass(frozen=True)
class PairSplit:
    """Per direction, (H, W) masks in its source frame (fw: frame t, bw: frame t+1): the
    label pixels trained on, the ones scored, and each scored pixel's bootstrap unit (its
    block of frame t; -1 where not scored)."""

    train_fw: np.ndarray
    score_fw: np.ndarray
    train_bw: np.ndarray
    score_bw: np.ndarray
    unit_fw: np.ndarray
    unit_bw: np.ndarray

    def train(self, direction: str) -> np.ndarray:
        return self.train_fw if direction == "fw" else self.train_bw


def pair_split(flow_fw, keep_fw, flow_bw, keep_bw, holdout: HoldOut | None) -> PairSplit:
    """:meth:`HoldOut.split`, or with no hold-out (``None``: the guard is off) every verified
    pixel trained on and none scored."""
    if holdout is not None:
        return holdout.split(flow_fw, keep_fw, flow_bw, keep_bw)
    kf, kb = _check(flow_fw, keep_fw, flow_bw, keep_bw)
    none = np.full(kf.shape, -1, np.int64)
    return PairSplit(kf, np.zeros_like(kf), kb, np.zeros_like(kb), none, none)


def read_split(labels, pair: int, holdout: HoldOut | None, name: str = "") -> tuple[np.ndarray, np.ndarray, PairSplit]:
    """(flow_fw, flow_bw, split) of pair ``pair`` of a label store (an open group with flow,
    keep, flow_bw, keep_bw; ``name`` its path, for errors): what both fine-tuning and the
    guard read a pair's masks from."""
    missing = [k for k in ("flow", "keep", "flow_bw", "keep_bw") if k not in labels]
    if missing:
        raise MotionRefineError(f"label store {name}: no array {', '.join(missing)} "
                                "(both directions' labels are needed to hold a region back in both)")
    fw = np.asarray(labels["flow"][pair], np.float32)
    bw = np.asarray(labels["flow_bw"][pair], np.float32)
    split = pair_split(fw, np.asarray(labels["keep"][pair], bool), bw, np.asarray(labels["keep_bw"][pair], bool),
                       holdout)
    return fw, bw, split


def all_units(flow_bw: np.ndarray, keep_fw: np.ndarray, keep_bw: np.ndarray, block: int) -> tuple[np.ndarray, ...]:
    """Every verified pixel scored, for a clip the model never trained on: (unit_fw, unit_bw),
    each pixel's block of frame t (a backward pixel's: that of its target), -1 where unverified."""
    keep_fw, keep_bw = np.asarray(keep_fw, bool), np.asarray(keep_bw, bool)
    cells = HoldOut(block=block).cells(*keep_fw.shape)
    unit_bw = np.full(keep_bw.shape, -1, np.int64)
    unit_bw[keep_bw] = cells[_target_pixel(np.asarray(flow_bw), keep_bw)]
    return np.where(keep_fw, cells, -1), unit_bw


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2r+1)² square (Chebyshev radius r), by running sums per axis."""
    out = np.asarray(mask, bool)
    if radius <= 0 or not out.any():
        return out.copy()
    for axis in (0, 1):
        n = out.shape[axis]
        c = np.concatenate([np.zeros_like(np.take(out, [0], axis), np.int64), np.cumsum(out, axis, np.int64)], axis)
        i = np.arange(n)
        out = (np.take(c, np.minimum(i + radius + 1, n), axis) - np.take(c, np.maximum(i - radius, 0), axis)) > 0
    return out


def _check(flow_fw, keep_fw, flow_bw, keep_bw) -> tuple[np.ndarray, np.ndarray]:
    kf, kb = np.asarray(keep_fw, bool), np.asarray(keep_bw, bool)
    want = (*kf.shape, 2)
    if kf.ndim != 2 or kb.shape != kf.shape or np.shape(flow_fw) != want or np.shape(flow_bw) != want:
        raise MotionRefineError(f"hold-out split: labels of one pair must be (H, W, 2) flow and (H, W) keep masks, "
                                f"got flow {np.shape(flow_fw)}/{np.shape(flow_bw)}, keep {kf.shape}/{kb.shape}")
    return kf, kb


def _footprint(ys: np.ndarray, xs: np.ndarray, flow: np.ndarray, h: int, w: int):
    """The 4 pixels around each target (x + u, y + v): (N, 4) rows and columns and whether each
    lies in the frame. A non-finite target has no footprint."""
    f = np.asarray(flow)[ys, xs].astype(np.float64)
    ok = np.isfinite(f).all(1)
    tx = np.floor(np.where(ok, xs + f[:, 0], -2.0)).astype(np.int64)
    ty = np.floor(np.where(ok, ys + f[:, 1], -2.0)).astype(np.int64)
    cx = np.stack([tx, tx + 1, tx, tx + 1], 1)
    cy = np.stack([ty, ty, ty + 1, ty + 1], 1)
    return cy, cx, (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)


def _lands_in(zone: np.ndarray, flow: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """(H, W) bool: the source pixels whose target footprint touches ``zone`` (other frame)."""
    h, w = zone.shape
    ys, xs = np.nonzero(sources)
    cy, cx, inside = _footprint(ys, xs, flow, h, w)
    hit = np.zeros(cy.shape, bool)
    hit[inside] = zone[cy[inside], cx[inside]]
    out = np.zeros((h, w), bool)
    out[ys[hit.any(1)], xs[hit.any(1)]] = True
    return out


def _target_pixel(flow: np.ndarray, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest in-frame pixel (row, column) of each source's target x + F(x)."""
    h, w = sources.shape
    ys, xs = np.nonzero(sources)
    f = np.nan_to_num(np.asarray(flow)[ys, xs].astype(np.float64))
    return (np.clip(np.rint(ys + f[:, 1]), 0, h - 1).astype(np.int64),
            np.clip(np.rint(xs + f[:, 0]), 0, w - 1).astype(np.int64))
