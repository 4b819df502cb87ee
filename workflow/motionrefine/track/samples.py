"""Training samples of the tracker's fine-tuning: a sample is up to ``tracks_per_sample``
label tracks of one window of one video (a labels store of ``track.labels`` and its frames
store); forward pass k uses ``sample_index(k)``, so a resumed run sees the same samples."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import open_group
from motionrefine.flow.holdout import HoldOut
from motionrefine.track.holdout import EXCLUDED, GUARD_BAND_PX, HELD, TRAIN, guard_roles
from motionrefine.track.resolution import at_size


@dataclass(frozen=True)
class TrackSample:
    labels: str
    frames: str
    window_start: int
    rows: tuple[int, ...]
    size: tuple[int, int] | None = None  # (height, width) the labels were made at; None: the frames' own


def labels_size(g, frames_shape: tuple) -> tuple[int, int] | None:
    """The size a labels store was made at, None where it is the frames' own (``track.resolution``)."""
    H, W = frames_shape[1:3]
    size = (int(g.attrs.get("height", H)), int(g.attrs.get("width", W)))
    return None if size == (H, W) else size


def load_track_samples(label_paths: Sequence, frames_paths: Sequence | Mapping, tracks_per_sample: int = 128,
                       min_tracks: int = 8, seed: int = 0, holdout: HoldOut | None = None,
                       held: bool = False, band: float = GUARD_BAND_PX,
                       counts: dict | None = None) -> list[TrackSample]:
    """Chunk every labels store's tracks, per window, into samples of ``tracks_per_sample``
    (rows shuffled within the window by ``seed`` so a chunk mixes seeds and dense tracks; a
    last chunk smaller than ``min_tracks`` is dropped). ``frames_paths``: a list parallel to
    ``label_paths`` or a mapping from the labels' ``video`` attr to the frames store.
    ``holdout``: the guard's split (``holdout.guard_roles`` with ``band``): only the tracks it
    trains on (``held``: the tracks it scores); tracks it excludes are in neither. ``counts``:
    if given, gets the split's ``held_tracks``, ``excluded_tracks`` and ``train_tracks``
    summed over the stores."""
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
        shape = open_group(fp)["frames"].shape
        T, size = shape[0], labels_size(g, shape)
        ws = np.asarray(g["window_start"][...], np.int64)
        S = g["tracks"].shape[1]
        if len(ws) and ws.max() + S > T:
            raise MotionRefineError(f"{lp}: windows reach frame {ws.max() + S - 1} but {fp} has {T} frames")
        chosen = np.ones(len(ws), bool)
        if holdout is not None:
            H, W = size or shape[1:3]
            try:
                roles = guard_roles(np.asarray(g["tracks"][...]), ws, holdout, H, W, band)
            except MotionRefineError as e:
                raise MotionRefineError(f"{lp}: {e}") from None
            chosen = roles == (HELD if held else TRAIN)
            if counts is not None:
                for name, role in (("held_tracks", HELD), ("excluded_tracks", EXCLUDED), ("train_tracks", TRAIN)):
                    counts[name] = counts.get(name, 0) + int((roles == role).sum())
        for w0 in np.unique(ws):
            rows = np.flatnonzero((ws == w0) & chosen)
            rows = rows[np.random.default_rng([seed, i, int(w0)]).permutation(len(rows))]
            for c in range(0, len(rows), tracks_per_sample):
                chunk = rows[c:c + tracks_per_sample]
                if len(chunk) >= min_tracks:
                    out.append(TrackSample(lp, fp, int(w0), tuple(int(r) for r in chunk), size))
    return out


def sample_index(k: int, n: int, seed: int, shuffle: bool) -> int:
    """Sample used by forward pass k: epochs over all n samples, each permuted by (seed, epoch)."""
    epoch, pos = divmod(k, n)
    return int(np.random.default_rng([seed, epoch]).permutation(n)[pos]) if shuffle else pos


def load_sample(sample: TrackSample, cache: dict) -> tuple[np.ndarray, np.ndarray]:
    """(frames (S, H, W, 3) uint8 at the labels' size, tracks (S, n, 2) float32) of a sample."""
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
    return at_size(frames, sample.size), tr.transpose(1, 0, 2)


def samples_digest(samples: Sequence[TrackSample]) -> str:
    """A digest of which samples a run trains on (part of its identity: changed samples start afresh)."""
    key = [(Path(s.labels).name, s.window_start, len(s.rows)) for s in samples]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()
