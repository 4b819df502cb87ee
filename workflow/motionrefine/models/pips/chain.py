"""Long videos with PIPs: chaining S-frame windows and re-anchoring on visible frames."""

from __future__ import annotations

import numpy as np
import torch

from motionrefine.core.errors import MotionRefineError
from motionrefine.models.pips.model import Pips


def reanchor_offset(vis: np.ndarray, threshold: float = 0.9, step: float = 0.02) -> int:
    """Window frame to restart from, given one point's visibility probabilities (S,).

    The PIPs chaining demo: the latest frame in [2, S−1] whose visibility exceeds the
    threshold; if none does, lower the threshold by ``step`` and look again."""
    vis = np.asarray(vis, dtype=np.float32)
    cand = vis[2:]
    if cand.size == 0:
        raise MotionRefineError("re-anchoring needs windows of at least 3 frames")
    thr = threshold
    while True:
        hit = np.nonzero(cand > np.float32(thr))[0]
        if hit.size:
            return int(hit[-1]) + 2
        thr -= step


class _FrameFeatures:
    """Lazily encoded per-frame feature maps of one video, dropped once no chain needs them."""

    def __init__(self, model: Pips, frames: np.ndarray, device: torch.device):
        self.model, self.frames, self.device = model, frames, device
        self.cache: dict[int, torch.Tensor] = {}

    def get(self, idx: list[int]) -> torch.Tensor:
        missing = sorted({i for i in idx if i not in self.cache})
        if missing:
            x = torch.from_numpy(np.ascontiguousarray(self.frames[missing])).to(self.device)
            f = self.model.encode(x.permute(0, 3, 1, 2)[None].float())[0]
            self.cache.update(zip(missing, f))
        return torch.stack([self.cache[i] for i in idx])

    def drop_before(self, order: list[int], pos: int) -> None:
        for i in order[:pos]:
            self.cache.pop(i, None)


def _chain(model: Pips, feats: _FrameFeatures, order: list[int], start: np.ndarray, xy: np.ndarray,
           iters: int, chunk: int, threshold: float, step: float, tracks: np.ndarray, vis_out: np.ndarray,
           points: np.ndarray) -> None:
    """Chain windows along ``order`` (frame indices) for ``points``, starting at positions
    ``start`` (into ``order``) with pixel positions ``xy``; writes tracks/vis in place."""
    S, T = model.cfg.S, len(order)
    dev = feats.device
    cur = start.astype(np.int64).copy()
    pos = xy.astype(np.float32).copy()
    feat = [None] * len(points)
    active = np.ones(len(points), dtype=bool)
    while active.any():
        c = int(cur[active].min())
        feats.drop_before(order, c)
        group = np.nonzero(active & (cur == c))[0]
        window = [order[min(c + k, T - 1)] for k in range(S)]  # short tail: repeat the last frame
        fm = feats.get(window)[None]
        s_local = min(S, T - c)
        for g0 in range(0, len(group), chunk):
            g = group[g0:g0 + chunk]
            q = torch.from_numpy(pos[g]).to(dev)[None]
            need = [k for k, j in enumerate(g) if feat[j] is None]
            if need:  # the query's own feature, kept for every later window of its chain
                f0 = model.sample_features(fm[:, 0], q[:, need] / model.stride)[0]
                for k, row in zip(need, f0):
                    feat[g[k]] = row
            f_init = torch.stack([feat[j] for j in g])[None]
            out = model(q, None, iters=iters, feat_init=f_init, fmaps=fm, lock_first=True)
            xy_w = out.coords[-1][0].transpose(0, 1).float().cpu().numpy()       # (n, S, 2)
            v_w = torch.sigmoid(out.vis[0]).transpose(0, 1).float().cpu().numpy()  # (n, S)
            frames_out = order[c:c + s_local]
            tracks[points[g][:, None], frames_out] = xy_w[:, :s_local]
            vis_out[points[g][:, None], frames_out] = v_w[:, :s_local]
            for k, j in enumerate(g):
                si = reanchor_offset(v_w[k], threshold, step)
                cur[j] = c + si
                if cur[j] >= T - 1:
                    # At T−1 the reference runs one more (padded) window whose only frame is
                    # the locked anchor: the position cannot change, so it is skipped here.
                    active[j] = False
                else:
                    pos[j] = xy_w[k, si]


@torch.no_grad()
def track_long(model: Pips, frames: np.ndarray, queries: np.ndarray, S: int = 8, iters: int = 6,
               chunk: int = 256, threshold: float = 0.9, step: float = 0.02,
               device: torch.device | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Track queries (N, 3) = [t, x, y] through frames (T, H, W, 3) uint8 by chaining S-frame windows.

    As the PIPs chaining demo: from the query frame, run one window, keep its positions, and
    restart at the latest window frame (≥ 2) predicted visible with probability > 0.9 (the
    threshold drops by 0.02 until one qualifies), carrying the query's original feature. The
    final window is padded by repeating the last frame. Frames before a query's frame are
    tracked the same way on the time-reversed video (the demo only goes forward).

    Returns tracks (N, T, 2) float32 pixels and visibility probabilities (N, T) float32.
    Resize frames beforehand if needed; coordinates are in the given frames' pixels.
    """
    if S != model.cfg.S:
        raise MotionRefineError(f"model window is S={model.cfg.S}, got S={S}")
    frames = np.asarray(frames)
    queries = np.asarray(queries, dtype=np.float64)
    if frames.ndim != 4 or frames.shape[-1] != 3 or queries.ndim != 2 or queries.shape[1] != 3:
        raise MotionRefineError(f"expected frames (T, H, W, 3) and queries (N, 3), got {frames.shape}, {queries.shape}")
    T, n = len(frames), len(queries)
    qt = queries[:, 0].round().astype(np.int64)
    if n and (qt.min() < 0 or qt.max() >= T):
        raise MotionRefineError(f"query frames must lie in [0, {T - 1}]")
    was_training = model.training
    model.eval()
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    tracks = np.full((n, T, 2), np.nan, dtype=np.float32)
    vis = np.zeros((n, T), dtype=np.float32)
    feats = _FrameFeatures(model, frames, dev)
    try:
        fwd = np.arange(n)
        _chain(model, feats, list(range(T)), qt[fwd], queries[fwd, 1:], iters, chunk, threshold, step,
               tracks, vis, fwd)
        back = np.nonzero(qt > 0)[0]
        if len(back):
            feats.cache.clear()
            order = list(range(T - 1, -1, -1))
            done_fwd = tracks[back, qt[back]].copy()
            vis_fwd = vis[back, qt[back]].copy()
            _chain(model, feats, order, T - 1 - qt[back], queries[back, 1:], iters, chunk, threshold, step,
                   tracks, vis, back)
            # the query frame itself belongs to the forward pass
            tracks[back, qt[back]] = done_fwd
            vis[back, qt[back]] = vis_fwd
    finally:
        model.train(was_training)
    return tracks, vis
