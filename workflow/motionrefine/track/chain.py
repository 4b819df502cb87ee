"""Long-range point tracks from chained optical flow, and the forward-backward track
verification used to make tracker pseudo-labels.

Chained flow (``chain_flow_tracks``) is the classic baseline for long-range tracking (as in the
TAP-Vid RAFT baseline and the refinement code's Horse10 RAFT evaluation): a point is moved
from frame t to t+1 by the forward flow sampled bilinearly at its current position.

Conventions: positions are (x, y) pixels with pixel centres at integers (``geometry``);
``flow_fw[t]`` maps frame t → t+1 and ``flow_bw[t]`` maps frame t+1 → t, both (H, W, 2)
(the layout of the flow stage's Zarr store; zarr arrays are read one pair at a time).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from motionrefine.core.errors import MotionRefineError
from motionrefine.core.geometry import sample_bilinear
from motionrefine.models.pips.flowpips import sample_features, chain_init

TrackFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- chained flow

def _flow_at(flow, t: int, xy: torch.Tensor) -> torch.Tensor:
    """Flow pair ``t`` sampled at xy (n, 2) → (n, 2). Border padding: a point that left the
    frame keeps moving with the flow at the nearest edge, as the reference sampler does."""
    f = flow[t]
    f = f if isinstance(f, torch.Tensor) else torch.from_numpy(np.asarray(f))
    f = f.to(torch.float64).permute(2, 0, 1)[None]
    return sample_bilinear(f, xy[None, :, None, :].to(f.dtype), padding_mode="border")[0, :, :, 0].T


def _inside(xy: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return (xy[:, 0] >= 0) & (xy[:, 0] <= w - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= h - 1)


def _fb_ok(u: torch.Tensor, v: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """‖u + v‖ < α(‖u‖ + ‖v‖) + β on plain norms, v being the return flow at the displaced position:
    the same test as the flow labels (cycle.fb_consistency)."""
    err = torch.linalg.vector_norm(u + v, dim=1)
    thr = alpha * (torch.linalg.vector_norm(u, dim=1) + torch.linalg.vector_norm(v, dim=1)) + beta
    ok = err < thr
    return ok & torch.isfinite(err)


def chain_flow_tracks(flow_fw, flow_bw, queries, alpha: float = 0.002, beta: float = 0.1,
                      stop_at_occlusion: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Tracks (N, T, 2) float32 and occluded (N, T) bool for queries (N, 3) = [t, x, y].

    From the query frame a point moves forward by ``flow_fw`` sampled at its position; frames
    before the query frame are filled the same way backwards with ``flow_bw``. A step
    t → t+1 from p is checked with the return flow at p + u: with u = F_fw[t](p) and
    v = F_bw[t](p + u), the point is marked occluded at t+1 when ‖u + v‖ ≥ α(‖u‖ + ‖v‖) + β
    (the defaults are the flow-label check's constants; α = 0 gives a plain pixel threshold β)
    or when it lies outside the frame at t+1.

    ``stop_at_occlusion=False`` (default, as the TAP-Vid chained-flow baselines): the position
    keeps propagating through occlusions and the flag marks only the failing frames.
    ``True``: the point stays at its last accepted position and every later frame (earlier,
    going backwards) is occluded.
    """
    queries = np.asarray(queries, dtype=np.float64)
    if queries.ndim != 2 or queries.shape[1] != 3:
        raise MotionRefineError(f"queries must be (N, 3) [t, x, y], got {queries.shape}")
    if len(flow_fw) != len(flow_bw) or len(flow_fw) < 1:
        raise MotionRefineError(f"need matching forward/backward flow stacks, got {len(flow_fw)} and {len(flow_bw)}")
    n_pairs = len(flow_fw)
    h, w = flow_fw[0].shape[:2]
    T = n_pairs + 1
    qt = queries[:, 0].round().astype(np.int64)
    if len(queries) and (qt.min() < 0 or qt.max() >= T):
        raise MotionRefineError(f"query frames must lie in [0, {T - 1}]")
    n = len(queries)
    tracks = torch.full((n, T, 2), float("nan"), dtype=torch.float64)
    occ = torch.zeros((n, T), dtype=torch.bool)
    q_xy = torch.from_numpy(queries[:, 1:])
    idx = torch.arange(n)
    qt_t = torch.from_numpy(qt)
    tracks[idx, qt_t] = q_xy
    occ[idx, qt_t] = ~_inside(q_xy, h, w)

    def step(direction: int) -> None:
        times = range(T - 1) if direction > 0 else range(T - 1, 0, -1)
        stopped = torch.zeros(n, dtype=torch.bool)
        for t in times:
            # points whose chain has reached frame t in this direction
            live = (qt_t <= t) if direction > 0 else (qt_t >= t)
            sel = torch.nonzero(live).flatten()
            if not len(sel):
                continue
            nxt = t + direction
            p = tracks[sel, t]
            pair = t if direction > 0 else t - 1
            there, back = (flow_fw, flow_bw) if direction > 0 else (flow_bw, flow_fw)
            u = _flow_at(there, pair, p)
            p1 = p + u
            v = _flow_at(back, pair, p1)
            bad = ~_fb_ok(u, v, alpha, beta) | ~_inside(p1, h, w) | ~torch.isfinite(p1).all(1)
            if stop_at_occlusion:
                halt = stopped[sel] | bad
                p1 = torch.where(halt[:, None], p, p1)
                stopped[sel] = halt
                bad = halt
            tracks[sel, nxt] = p1
            occ[sel, nxt] = bad

    step(+1)
    step(-1)
    return tracks.float().numpy(), occ.numpy()


# --------------------------------------------------------------------------- verification

def pips_track_fn(model, iters: int = 6, chunk: int = 512, device=None) -> TrackFn:
    """A ``track_fn`` running PIPs on one window: frames (S, H, W, 3) uint8, queries (N, 2)
    at frame 0 → positions (S, N, 2) from the last iteration."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device

    @torch.no_grad()
    def track(frames: np.ndarray, queries: np.ndarray) -> np.ndarray:
        model.eval()
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(dev).permute(0, 3, 1, 2)[None].float()
        fmaps = model.encode(x)
        q = torch.as_tensor(np.asarray(queries, dtype=np.float32), device=dev)
        out = [model(q[None, s:s + chunk], None, iters=iters, fmaps=fmaps).coords[-1][0]
               for s in range(0, len(q), chunk)]
        if not out:
            return np.zeros((len(frames), 0, 2), np.float32)
        return torch.cat(out, dim=1).float().cpu().numpy()

    return track


class ClipTracker:
    """Tracks within one S-frame clip, both ways: ``forward(q)`` from points (N, 2) at frame 0
    and ``backward(p)`` from points at frame S−1, each → (S, N, 2) in forward frame order.
    Trackers whose inputs are per clip (flow, features) compute them once for both ways."""

    def forward(self, queries: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, points: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class FramesClip(ClipTracker):
    """A frames-only ``track_fn(frames, queries)``: backward = forward on the reversed clip."""

    def __init__(self, track_fn: TrackFn, frames: np.ndarray):
        self.track_fn, self.frames = track_fn, frames

    def forward(self, queries):
        return self.track_fn(self.frames, queries)

    def backward(self, points):
        return np.asarray(self.track_fn(self.frames[::-1], points))[::-1]


# --------------------------------------------------------------------------- clip trackers (verification)

class ChainedFlowClip(ClipTracker):
    """Chained flow within a clip (``chain.ClipTracker``): forward with fw from frame 0,
    backward with bw from frame S−1. fw/bw: (S−1, H, W, 2) of the clip's pairs."""

    def __init__(self, fw, bw, size: tuple[int, int]):
        self.fw = torch.as_tensor(np.asarray(fw), dtype=torch.float64)
        self.bw = torch.as_tensor(np.asarray(bw), dtype=torch.float64)
        self.size = size

    def forward(self, queries):
        S = len(self.fw) + 1
        p, _, _ = chain_init(self.fw, self.bw, list(range(S)), torch.as_tensor(np.asarray(queries, np.float64)),
                             self.size, 0.0, 0.0)
        return p.numpy()

    def backward(self, points):
        S = len(self.fw) + 1
        p, _, _ = chain_init(self.bw, self.fw, list(range(S - 1, -1, -1)),
                             torch.as_tensor(np.asarray(points, np.float64)), self.size, 0.0, 0.0)
        return p.numpy()[::-1]


class FlowPipsClip(ClipTracker):
    """FlowPips within a clip (``chain.ClipTracker``): the clip's flow and features once, then
    the window update forward from frame 0 or backward from frame S−1."""

    def __init__(self, model, frames: np.ndarray, iters: int | None = None, flows=None):
        """``flows``: this clip's (fw, bw, feats, offset), e.g. sliced from the whole video's
        ``model.flow_and_features`` (each pair's flow does not depend on its neighbours)."""
        self.model, self.iters = model, iters
        self.fw, self.bw, self.feats, self.offset = flows if flows is not None else model.flow_and_features(frames)
        self.size = tuple(frames.shape[1:3])

    @torch.no_grad()
    def _run(self, order, there, back, xy):
        xy = torch.as_tensor(np.asarray(xy, np.float64), device=self.model.device)
        template = sample_features(self.feats[order[0]], xy, self.offset)
        was = self.model.training
        self.model.eval()
        try:
            tr, _ = self.model.chain_windows(self.feats, order, there, back, xy, template, self.offset, self.size,
                                             self.iters)
        finally:
            self.model.train(was)
        return tr.transpose(0, 1).cpu().numpy()

    def forward(self, queries):
        S = len(self.feats)
        return self._run(list(range(S)), self.fw, self.bw, queries)

    def backward(self, points):
        S = len(self.feats)
        return self._run(list(range(S - 1, -1, -1)), self.bw, self.fw, points)[::-1]


def verify_tracks(track_fn, frames_window: np.ndarray, queries: np.ndarray, theta: float,
                  iters: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward-backward verification of tracks on one window.

    P_f = track(V, q); P_b = reverse_time(track(reverse_time(V), P_f[S−1])); a track is kept
    iff ‖P_f[t] − P_b[t]‖ < θ at every frame t (non-finite distances fail). Visibility is not
    used. ``track_fn(frames (S,H,W,3), queries (N,2)) -> (S, N, 2)``; a PIPs model is wrapped
    with ``pips_track_fn`` (``iters`` iterations); a :class:`ClipTracker` of this clip is used as it is.

    Returns (tracks_fwd (N, S, 2) float32, keep (N,) bool, max_dist (N,) float32, inf if non-finite).
    """
    if isinstance(track_fn, torch.nn.Module):
        track_fn = pips_track_fn(track_fn, iters)
    frames_window = np.asarray(frames_window)
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != 2:
        raise MotionRefineError(f"queries must be (N, 2) [x, y], got {queries.shape}")
    S, n = len(frames_window), len(queries)
    clip = track_fn if isinstance(track_fn, ClipTracker) else FramesClip(track_fn, frames_window)
    fwd = np.asarray(clip.forward(queries), dtype=np.float32)
    if fwd.shape != (S, n, 2):
        raise MotionRefineError(f"track_fn returned {fwd.shape}, expected {(S, n, 2)}")
    bwd = np.asarray(clip.backward(fwd[-1]), dtype=np.float32)
    dist = np.linalg.norm(fwd.astype(np.float64) - bwd.astype(np.float64), axis=-1)  # (S, N)
    dist = np.where(np.isfinite(dist), dist, np.inf)
    max_dist = dist.max(axis=0) if S else np.zeros(n)
    keep = (dist < theta).all(axis=0)
    return np.ascontiguousarray(fwd.transpose(1, 0, 2)), keep, max_dist.astype(np.float32)


def densify_queries(points, w: int, H: int, W: int) -> np.ndarray:
    """Integer (M, 2) [x, y] grid of side ``w`` around each point, duplicates removed, outside
    points dropped. For a point (x, y) with x0 = ⌊x⌋, y0 = ⌊y⌋ the grid is
    x ∈ [x0 − ⌊w/2⌋, x0 − ⌊w/2⌋ + w), likewise y: exactly w×w before clipping (for even w
    this is the reference's [x − w/2, x + w/2)). Order: by point, then row-major in y, x."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if w < 1:
        raise MotionRefineError(f"window side must be >= 1, got {w}")
    if not np.isfinite(pts).all():
        raise MotionRefineError("query points must be finite")
    d = np.arange(w) - w // 2
    dy, dx = np.meshgrid(d, d, indexing="ij")
    base = np.floor(pts).astype(np.int64)
    grid = (base[:, None, :] + np.stack([dx.ravel(), dy.ravel()], axis=-1)[None]).reshape(-1, 2)
    inside = (grid[:, 0] >= 0) & (grid[:, 0] < W) & (grid[:, 1] >= 0) & (grid[:, 1] < H)
    grid = grid[inside]
    _, first = np.unique(grid, axis=0, return_index=True)
    return grid[np.sort(first)]
