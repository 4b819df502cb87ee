"""Tracker pseudo-labels for one video: verified, densified, speed-re-balanced S-frame tracks.

Pipeline per video (frames (T, H, W, 3) uint8):
1. windows of S frames every ``window_stride`` frames (default S//2, plus a tail window);
2. seed queries at each window's first frame: a grid (``grid_spacing``) or corners;
3. forward-backward verification with θ scaled to the resolution, then densification
   around kept seeds, verified the same way (``densify.verify_and_densify``);
4. re-balancing by speed (px/frame, bins [0,1), [1,2), [2,4.5), ≥4.5 by default):
   ``filter`` (default) keeps only tracks faster than ``min_speed`` (the official Horse10
   filter, which drops near-static tracks), ``cap`` limits every bin's share of the kept
   tracks (``rebalance.cap_bins``; beware: with one dominant bin it drops most tracks),
   ``none`` keeps all. With ``speed_units="reference"`` (default) speeds are measured in pixels of
   the 256×448 reference frame, like θ, so the bins mean the same motion at every size.
5. a Zarr store (``store.atomic_group``): tracks (N, S, 2), window_start (N,), speed_bin (N,),
   speed (N,), fb_dist (N,), origin (N,; 0 seed, 1 dense), hist_before / hist_after (bins,),
   window_starts (W,); attrs: video, checkpoint and its sha256, θ, w, bins, per-window
   counts, code version and the full config.

Labels are forward tracks in pixels of the size they were made at (attrs ``height``/``width``:
the frames' own, or smaller above ``max_pixels``, ``track.resolution``); every point is treated
as visible (the official recipe).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from motionrefine import __version__
from motionrefine.flow.cycle import DEFAULT_SPEED_EDGES, check_speed_edges, speed_bin_index
from motionrefine.track.densify import (corner_queries, grid_queries, resolution_scale, scaled_size, scaled_theta,
                      verify_and_densify, window_starts)
from motionrefine.core.device import pick_device
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.mapping import from_mapping
from motionrefine.flow.rebalance import cap_bins, speed_filter, track_speed
from motionrefine.core.store import atomic_group, open_group, write_array
from motionrefine.track.chain import ClipTracker, pips_track_fn
from motionrefine.track.resolution import at_size, tracking_size

log = logging.getLogger("motionrefine")

REBALANCE_MODES = ("cap", "filter", "none")
LABEL_FORMAT_VERSION = 1


@dataclass
class TrackLabelConfig:
    # tracker
    size: str = "small"             # PipsConfig size the checkpoint was trained as
    stride: int | None = None       # feature stride at inference (None: the size's default)
    iters: int = 6
    chunk: int = 512
    expected_sha256: str | None = None
    max_pixels: int | None = None   # frames above this many pixels are labelled downscaled (track.resolution)
    # windows and queries
    window_stride: int | None = None  # default S // 2
    queries: str = "grid"           # grid | corners
    grid_spacing: float | None = None  # px; None: grid_spacing_ref scaled to the resolution
    grid_spacing_ref: float = 24.0
    max_corners: int = 300
    corner_quality: float = 0.01
    margin_ref: float = 4.0         # min distance of seeds from the border at 256×448
    # verification and densification
    theta: float | None = None      # px; None: theta_ref scaled to the resolution
    theta_ref: float = 3.0
    dense_w: int | None = None      # grid side; None: dense_w_ref scaled; 0: no densification
    dense_w_ref: int = 3
    max_dense_seeds: int | None = 32  # per window, kept seeds to densify around (random); None: all
    # re-balancing
    rebalance: str = "filter"       # filter (drop near-static) | cap (bin shares) | none
    speed_edges: tuple = DEFAULT_SPEED_EDGES
    max_share: float = 0.5
    # rebalance="filter": keep speed > min_speed. The official Horse10 filter is 5 px/frame on
    # windows subsampled x4 from the video, about 1.25 px per original frame, hence 1.0 here.
    min_speed: float = 1.0
    speed_units: str = "reference"  # reference (256×448 px/frame) | native
    # misc
    seed: int = 0
    device: str = "auto"
    threads: int | None = 1
    video: str | None = None        # name stored in the attrs; default: the frames store's stem

    def __post_init__(self):
        self.speed_edges = tuple(float(e) for e in check_speed_edges(self.speed_edges))
        if self.queries not in ("grid", "corners"):
            raise MotionRefineError(f"queries must be 'grid' or 'corners', got {self.queries!r}")
        if self.rebalance not in REBALANCE_MODES:
            raise MotionRefineError(f"rebalance must be one of {REBALANCE_MODES}, got {self.rebalance!r}")
        if self.speed_units not in ("reference", "native"):
            raise MotionRefineError(f"speed_units must be 'reference' or 'native', got {self.speed_units!r}")
        if not 0 < self.max_share <= 1:
            raise MotionRefineError(f"max_share must be in (0, 1], got {self.max_share}")
        if self.iters < 1:
            raise MotionRefineError(f"iters must be >= 1, got {self.iters}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrackLabelConfig":
        return from_mapping(cls, d, "track-label config")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["speed_edges"] = edges_json(self.speed_edges)
        return d

    def resolved(self, height: int, width: int) -> dict:
        """The resolution-dependent values actually used at this frame size."""
        scale = resolution_scale(height, width)
        return {
            "theta": float(self.theta) if self.theta is not None else scaled_theta(height, width, self.theta_ref),
            "dense_w": int(self.dense_w) if self.dense_w is not None else (
                0 if self.dense_w_ref == 0 else scaled_size(height, width, self.dense_w_ref)),
            "grid_spacing": float(self.grid_spacing) if self.grid_spacing is not None else max(
                2.0, self.grid_spacing_ref * scale),
            "margin": self.margin_ref * scale,
            "corner_min_distance": max(2.0, 8.0 * scale),
            "speed_scale": 1.0 / scale if self.speed_units == "reference" else 1.0,
            "resolution_scale": scale,
        }


def edges_json(edges: Sequence[float]) -> list:
    # JSON has no infinity: the open upper edge is written as the string "inf".
    return [("inf" if math.isinf(e) else float(e)) for e in edges]


# --------------------------------------------------------------------------- re-balancing

def speed_histogram(speed: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    bins = speed_bin_index(torch.from_numpy(np.asarray(speed, np.float64)), edges).numpy()
    return np.bincount(bins[bins >= 0], minlength=len(edges) - 1).astype(np.int64)


def rebalance_tracks(tracks: np.ndarray, mode: str = "filter", edges: Sequence[float] = DEFAULT_SPEED_EDGES,
                     max_share: float = 0.5, min_speed: float = 1.0, speed_scale: float = 1.0,
                     rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Which tracks (N, S, 2) to keep. Returns (keep (N,) bool, speed (N,) px/frame after
    ``speed_scale``, bin (N,) int8, the share cap actually applied).

    ``cap``: no speed bin holds more than ``max_share`` of the kept tracks; if fewer bins are
    occupied than 1/max_share the cap is raised to 1/(occupied bins) (the tightest feasible
    one), and the raised value is returned. ``filter``: speed > ``min_speed``. ``none``: all."""
    tracks = np.asarray(tracks, np.float64)
    n = len(tracks)
    if n == 0:
        return np.zeros(0, bool), np.zeros(0, np.float32), np.zeros(0, np.int8), float(max_share)
    speed = track_speed(tracks) * speed_scale
    bins = speed_bin_index(torch.from_numpy(speed), edges).numpy().astype(np.int8)
    share = float(max_share)
    if mode == "none":
        keep = np.isfinite(speed)
    elif mode == "filter":
        keep = speed_filter(tracks, min_speed, scale=speed_scale)
    elif mode == "cap":
        occupied = len(np.unique(bins[bins >= 0]))
        if occupied:
            share = max(share, 1.0 / occupied)
        keep = cap_bins(tracks * speed_scale, edges, share, rng=rng) if occupied else np.zeros(n, bool)
    else:
        raise MotionRefineError(f"rebalance must be one of {REBALANCE_MODES}, got {mode!r}")
    return keep, speed.astype(np.float32), bins, share


# --------------------------------------------------------------------------- labelling

def seed_queries(frame: np.ndarray, cfg: TrackLabelConfig, res: dict) -> np.ndarray:
    h, w = frame.shape[:2]
    if cfg.queries == "grid":
        return grid_queries(h, w, res["grid_spacing"], res["margin"])
    return corner_queries(frame, cfg.max_corners, cfg.corner_quality, res["corner_min_distance"], res["margin"])


def label_video(frames, track_fn, cfg: TrackLabelConfig | dict | None = None, S: int = 8,
                window_tracker: Callable[[int, np.ndarray], ClipTracker | None] | None = None) -> dict:
    """Pseudo-labels of one video. ``frames``: (T, H, W, 3) uint8 array (or a lazily indexed
    zarr array); ``track_fn(frames (S,H,W,3), queries (N,2)) -> (S, N, 2)`` (e.g.
    ``chain.pips_track_fn(model)``), or None with ``window_tracker(start, clip)`` giving a
    ``chain.ClipTracker`` per window (a teacher whose flow is per video), or None for a window
    the teacher cannot label (it then gives no tracks and its entry says ``skipped``).
    Returns a dict of numpy arrays (tracks, window_start,
    speed, speed_bin, fb_dist, origin, hist_before, hist_after, window_starts) plus
    ``windows`` (per-window counts) and ``resolved`` (θ, w, … used)."""
    cfg = cfg if isinstance(cfg, TrackLabelConfig) else TrackLabelConfig.from_dict(cfg)
    T, H, W = frames.shape[:3]
    res = cfg.resolved(H, W)
    starts = window_starts(T, S, cfg.window_stride)
    tracks, wstart, origin, dist, windows = [], [], [], [], []
    for s in starts:
        clip = np.asarray(frames[s:s + S])
        seeds = seed_queries(clip[0], cfg, res)
        fn = window_tracker(int(s), clip) if window_tracker is not None else track_fn
        if fn is None:
            windows.append({"start": int(s), "skipped": True, "seeds": 0, "seeds_kept": 0, "dense": 0,
                            "dense_kept": 0, "tracks": 0})
            continue
        wl = verify_and_densify(fn, clip, seeds, res["theta"], res["dense_w"], cfg.max_dense_seeds,
                                np.random.default_rng([cfg.seed, s]))
        tracks.append(wl.tracks)
        wstart.append(np.full(len(wl.tracks), s, np.int32))
        origin.append(wl.origin)
        dist.append(wl.fb_dist)
        windows.append({"start": int(s), **wl.stats()})
        log.info("window %d: %d/%d seeds and %d/%d dense queries verified (θ = %.2f px, w = %d)", s,
                 wl.n_seeds_kept, wl.n_seeds, wl.n_dense_kept, wl.n_dense, res["theta"], res["dense_w"])
    cat = (lambda xs, shape, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(shape, dt))
    all_tracks = cat(tracks, (0, S, 2), np.float32)
    all_start = cat(wstart, (0,), np.int32)
    all_origin = cat(origin, (0,), np.int8)
    all_dist = cat(dist, (0,), np.float32)
    keep, speed, bins, share = rebalance_tracks(all_tracks, cfg.rebalance, cfg.speed_edges, cfg.max_share,
                                                cfg.min_speed, res["speed_scale"],
                                                np.random.default_rng([cfg.seed, 1_000_003]))
    hist_before = speed_histogram(speed, cfg.speed_edges)
    out = {
        "tracks": all_tracks[keep], "window_start": all_start[keep], "speed": speed[keep],
        "speed_bin": bins[keep], "fb_dist": all_dist[keep], "origin": all_origin[keep],
        "hist_before": hist_before, "hist_after": speed_histogram(speed[keep], cfg.speed_edges),
        "window_starts": np.asarray(starts, np.int32), "windows": windows,
        "resolved": {**res, "max_share_applied": share},
    }
    log.info("speed bins before %s, after re-balancing (%s) %s", hist_before.tolist(), cfg.rebalance,
             out["hist_after"].tolist())
    return out


def write_track_labels(labels: dict, out_path: str | os.PathLike, attrs: dict) -> None:
    """Write ``label_video``'s output atomically (see module doc for the layout)."""
    with atomic_group(out_path) as g:
        n = len(labels["tracks"])
        S = labels["tracks"].shape[1]
        write_array(g, "tracks", np.ascontiguousarray(labels["tracks"], np.float32), chunks=(max(n, 1), S, 2))
        for name in ("window_start", "speed", "speed_bin", "fb_dist", "origin", "teacher"):
            if name not in labels:
                continue
            write_array(g, name, np.ascontiguousarray(labels[name]), chunks=(max(n, 1),))
        for name in ("hist_before", "hist_after", "window_starts"):
            a = np.ascontiguousarray(labels[name])
            write_array(g, name, a, chunks=(max(len(a), 1),))
        g.attrs.update(attrs)


def make_track_labels(frames_path: str | os.PathLike, checkpoint: str | os.PathLike, out_path: str | os.PathLike,
                      **cfg) -> dict:
    """Pseudo-label one video's frames store (Zarr with ``frames`` (T, H, W, 3) uint8) with the PIPs
    ``checkpoint`` and write the labels store at ``out_path``. Keyword arguments are
    :class:`TrackLabelConfig` fields. Returns a summary (counts, histograms, θ, w, seconds)."""
    c = TrackLabelConfig.from_dict(cfg)
    from motionrefine.models.pips import load_pips

    dev = pick_device(c.device, c.threads)
    model, digest = load_pips(checkpoint, c.size, c.expected_sha256, stride=c.stride)
    model.to(dev)
    frames = open_group(frames_path)["frames"]
    T, H0, W0 = frames.shape[:3]
    H, W = tracking_size(H0, W0, c.max_pixels)
    if (H, W) != (H0, W0):
        frames = at_size(frames[...], (H, W))
    S = model.cfg.S
    if T < S:
        raise MotionRefineError(f"{frames_path}: {T} frames, fewer than one {S}-frame window")
    started = time.perf_counter()
    labels = label_video(frames, pips_track_fn(model, c.iters, c.chunk, dev), c, S=S)
    seconds = time.perf_counter() - started
    res = labels["resolved"]
    video = c.video or Path(frames_path).name.removesuffix(".zarr")
    summary = {
        "video": video, "tracks": int(len(labels["tracks"])), "windows": len(labels["window_starts"]),
        "hist_before": labels["hist_before"].tolist(), "hist_after": labels["hist_after"].tolist(),
        "theta": res["theta"], "dense_w": res["dense_w"], "seconds": round(seconds, 3),
        "checkpoint_sha256": digest,
    }
    attrs = {
        "format_version": LABEL_FORMAT_VERSION, "video": video, "frames_path": str(frames_path),
        "num_frames": int(T), "height": int(H), "width": int(W), "S": int(S),
        "stored_height": int(H0), "stored_width": int(W0),
        "window_stride": int(c.window_stride or S // 2),
        "checkpoint": str(checkpoint), "checkpoint_sha256": digest, "model_size": c.size,
        "model_stride": int(model.stride), "iters": c.iters,
        "theta": res["theta"], "theta_ref": c.theta_ref, "w": res["dense_w"], "dense_w_ref": c.dense_w_ref,
        "grid_spacing": res["grid_spacing"], "queries": c.queries,
        "speed_bins": edges_json(c.speed_edges), "speed_units": c.speed_units,
        "speed_scale": res["speed_scale"], "rebalance": c.rebalance,
        "max_share_applied": res["max_share_applied"],
        "windows": labels["windows"], "config": c.to_dict(), "code_version": __version__,
        "seconds": round(seconds, 3), "device": str(dev),
        "convention": "tracks[i, s] = (x, y) px at frame window_start[i] + s of the frames store resized to "
                      "height x width; all visible",
    }
    write_track_labels(labels, out_path, attrs)
    log.info("%s: %d tracks in %d windows (%.1f s) -> %s", video, summary["tracks"], summary["windows"], seconds,
             out_path)
    return summary


def read_track_labels(path: str | os.PathLike) -> dict:
    """Arrays and attrs of a labels store (``attrs`` under that key)."""
    g = open_group(path)
    missing = [k for k in ("tracks", "window_start") if k not in g]
    if missing:
        raise MotionRefineError(f"{path} is not a track-labels store (missing {missing})")
    out = {k: g[k][...] for k in g.array_keys()}
    out["attrs"] = dict(g.attrs)
    return out
