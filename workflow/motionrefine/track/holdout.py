"""Which label tracks the tracker's guard scores, which it trains on, and which it leaves out.

A track is scored (held back) if its first point lies in a held block of the
``flow.holdout.HoldOut`` lattice. The blocks are drawn at frame 0 only, but tracks move, windows
overlap in time (stride S/2) and densified neighbours straddle block edges, so a training
track can sit a pixel from a scored one, or pass through its positions at a later frame, and
the update would learn the scored answer through it. So a training track is excluded (neither
trained on nor scored) if at any frame of the video its position comes within ``band`` px of a
scored track's position at that same frame, in any window. The default band, 8 px, is one
cell of RAFT's 1/8 feature grid, the resolution of the features the update reads. After the
rule, every trained-on position is more than ``band`` from every scored position of its frame.

Why scored positions and not a band around the blocks: the blocks say where scored tracks
start, not where they go; and an 8 px band around every 16 px block of a 1-in-5 lattice covers
most of the frame, which would drop tracks that never come near a scored one.
"""

from __future__ import annotations

import numpy as np

from motionrefine.core.errors import MotionRefineError
from motionrefine.flow.holdout import HoldOut

TRAIN, HELD, EXCLUDED = 0, 1, 2
GUARD_BAND_PX = 8.0


def within_band(points: np.ndarray, centres: np.ndarray, band: float) -> np.ndarray:
    """(P,) bool: some centre (C, 2) lies within ``band`` px (≤) of each point (P, 2).

    Exact, by cells of side ``band``: a centre within ``band`` of a point lies in the point's
    cell or one of its 8 neighbours, so only those are compared."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    centres = np.asarray(centres, np.float64).reshape(-1, 2)
    near = np.zeros(len(points), bool)
    if not len(points) or not len(centres):
        return near
    pc = np.floor(points / band).astype(np.int64)
    cc = np.floor(centres / band).astype(np.int64)
    lo = np.minimum(pc.min(0), cc.min(0)) - 1
    pc, cc = pc - lo, cc - lo
    cols = int(max(pc[:, 0].max(), cc[:, 0].max())) + 2
    key = cc[:, 1] * cols + cc[:, 0]
    order = np.argsort(key, kind="stable")
    key, centres = key[order], centres[order]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            k = (pc[:, 1] + dy) * cols + pc[:, 0] + dx
            a, b = np.searchsorted(key, k, "left"), np.searchsorted(key, k, "right")
            n = b - a
            if not n.any():
                continue
            rows = np.repeat(np.arange(len(points)), n)
            idx = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n) + np.repeat(a, n)
            d = np.linalg.norm(points[rows] - centres[idx], axis=1)
            near[rows[d <= band]] = True
    return near


def guard_roles(tracks: np.ndarray, window_start: np.ndarray, holdout: HoldOut, height: int, width: int,
                band: float = GUARD_BAND_PX) -> np.ndarray:
    """(N,) int8 role of each label track (N, S, 2) of one video: ``HELD`` (starts in a held
    block: scored), ``EXCLUDED`` (comes within ``band`` of a scored track at some frame) or
    ``TRAIN``. ``window_start`` (N,): the video frame of each track's first point."""
    tracks = np.asarray(tracks, np.float64)
    ws = np.asarray(window_start, np.int64)
    if tracks.ndim != 3 or tracks.shape[2] != 2 or ws.shape != (len(tracks),):
        raise MotionRefineError(f"label tracks must be (N, S, 2) with window_start (N,), got {tracks.shape} "
                                f"and {ws.shape}")
    if not np.isfinite(tracks).all():
        raise MotionRefineError("label tracks hold non-finite positions; the guard cannot place them")
    if not band > 0:
        raise MotionRefineError(f"guard band must be > 0 px, got {band}")
    roles = np.full(len(tracks), TRAIN, np.int8)
    if not len(tracks):
        return roles
    x = np.clip(np.round(tracks[:, 0, 0]), 0, width - 1).astype(np.int64)
    y = np.clip(np.round(tracks[:, 0, 1]), 0, height - 1).astype(np.int64)
    held = holdout.mask(height, width)[y, x]
    roles[held] = HELD
    if held.all():
        return roles
    S = tracks.shape[1]
    for f in range(int(ws.min()), int(ws.max()) + S):  # every video frame a track is on
        on = (ws <= f) & (f < ws + S)
        scored, cand = np.flatnonzero(on & held), np.flatnonzero(on & ~held)
        if len(scored) and len(cand):
            near = within_band(tracks[cand, f - ws[cand]], tracks[scored, f - ws[scored]], band)
            roles[cand[near]] = EXCLUDED
    return roles
