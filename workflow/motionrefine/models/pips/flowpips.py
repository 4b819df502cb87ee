"""FlowPips: a PIPs-style multi-frame tracker on a frozen RAFT-small, initialised from chained flow.

The frozen RAFT-small (``raft-small.pth``) does two jobs: its flow, chained frame to frame,
gives every track an initial trajectory and a per-step forward-backward error; its feature
encoder (trained on real-image flow) gives the 1/8-scale features the update correlates.

Per S-frame window the update is PIPs' (Harley et al., ECCV 2022): each track's template
feature (sampled at the query) is correlated with a small pyramid of every frame's features
in a (2r+1)² window around the current estimate; per frame, these correlations, the
displacement from the chained-flow initialisation, the initial velocity and the
forward-backward error form a token; an MLP-Mixer over the S frames (token mixing over time,
channel mixing per frame) outputs a position delta and a visibility logit per frame. The
update is applied ``iters`` times with shared weights (gradient through each, not across).

The mixer's output layer starts at zero and the visibility logit has a fixed prior of
±``prior_logit`` from the chained flow's forward-backward check, so the untrained tracker
reproduces chained RAFT exactly (tracks and occlusion flags); training can only have to
improve on it.

Long videos: windows are chained, each starting where the previous one's refined track ends
(S−1 frames on), and the template feature stays the query's own. Frames before the query
are tracked the same way on the time-reversed video with the backward flow.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from motionrefine.core.errors import CheckpointError, MotionRefineError
from motionrefine.core.geometry import sample_bilinear
from motionrefine.core.limits import CORR_CHUNK_BYTES
from motionrefine.models.pips.model import _mlp, _PreNormResidual
from motionrefine.models.raft import RAFT, InputPadder
from motionrefine.models.raft.corr import window_offsets

FLOWPIPS_SIZE = "flow-small"


@dataclass(frozen=True)
class FlowPipsConfig:
    S: int = 8
    dim: int = 128              # mixer width
    depth: int = 3              # mixer blocks
    expansion: int = 2
    corr_levels: int = 3        # feature pyramid levels (1/8, 1/16, 1/32)
    corr_radius: int = 3
    iters: int = 3              # update iterations
    raft_iters: int = 12        # the student's RAFT iterations for the initial flow
    fb_alpha: float = 0.01      # chained flow's forward-backward check (see ``chain.chain_flow_tracks``)
    fb_beta: float = 1.0
    prior_logit: float = 2.0    # visibility logit prior: +p where the check passes, −p where not
    delta_scale: float = 4.0    # px per unit of the mixer's position output

    @property
    def token_dim(self) -> int:
        return self.corr_levels * (2 * self.corr_radius + 1) ** 2 + 7

    def to_dict(self) -> dict:
        return asdict(self)


class TemporalMixer(nn.Module):
    """(B, S, in) → (B, S, 3): embed, ``depth`` × (mixing over time, mixing over channels), head.
    The head starts at zero (no delta, visibility = the prior)."""

    def __init__(self, cfg: FlowPipsConfig):
        super().__init__()
        self.embed = nn.Linear(cfg.token_dim, cfg.dim)
        self.blocks = nn.Sequential(*[nn.Sequential(_PreNormResidual(cfg.dim, _mlp(cfg.S, cfg.expansion, 0.0, True)),
                                                    _PreNormResidual(cfg.dim, _mlp(cfg.dim, cfg.expansion, 0.0, False)))
                                      for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, 3)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(x))))


class FlowPips(nn.Module):
    def __init__(self, cfg: FlowPipsConfig | None = None, **overrides):
        super().__init__()
        cfg = cfg or FlowPipsConfig()
        self.cfg = replace(cfg, **overrides) if overrides else cfg
        self.raft = RAFT("small")
        for p in self.raft.parameters():
            p.requires_grad_(False)
        self.raft_sha256: str | None = None  # of the RAFT-small weights loaded (``from_raft``)
        self.mixer = TemporalMixer(self.cfg)

    # ------------------------------------------------------------------ frozen RAFT

    def train(self, mode: bool = True):
        super().train(mode)
        self.raft.eval()  # frozen: never in training mode
        return self

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def flow_and_features(self, frames: np.ndarray | torch.Tensor, chunk: int = 8,
                          max_corr_bytes: int = CORR_CHUNK_BYTES):
        """Frames (T, H, W, 3) uint8 → forward flow (T−1, H, W, 2), backward flow (T−1, H, W, 2)
        (backward[t] maps t+1 → t), as float64 tensors, and features (T, C, h, w) of the padded
        frames with the padding offset (left, top) in pixels. Pairs are computed in chunks of
        ``chunk`` as ``evaluate.raft_chain_tracker`` does (each pair is independent of its chunk).

        Memory is bounded at any frame size: frames are encoded ``chunk`` at a time, and a chunk
        of pairs is cut so that its all-pairs correlation volumes (both directions) stay within
        ``max_corr_bytes`` (at 960×540 one volume is 266 MB, so a pair is its own chunk)."""
        frames = torch.as_tensor(np.ascontiguousarray(frames))
        T = len(frames)
        padder = InputPadder((T, 3, *frames.shape[1:3]), "even")
        feats, nets, inps = [], [], []
        for s in range(0, T, chunk):
            x = padder.pad_images(frames[s:s + chunk].to(self.device).permute(0, 3, 1, 2).float())
            feats.append(self.raft.encode_features(x))
            net, inp = self.raft.encode_context(x)
            nets.append(net)
            inps.append(inp)
        feats, net, inp = torch.cat(feats), torch.cat(nets), torch.cat(inps)
        cells = feats.shape[-2] * feats.shape[-1]
        pairs = max(1, min(chunk, int(max_corr_bytes // (2 * 4 * cells * cells))))
        fws, bws = [], []
        for s in range(0, T - 1, pairs):
            src = list(range(s, min(s + pairs, T - 1)))
            dst = [i + 1 for i in src]
            preds, _ = self.raft.refine(feats[src + dst], feats[dst + src], net[src + dst], inp[src + dst],
                                        self.cfg.raft_iters, all_iters=False)
            flow = padder.unpad(preds[-1]).permute(0, 2, 3, 1).to(torch.float64)
            fws.append(flow[:len(src)])
            bws.append(flow[len(src):])
        h, w = frames.shape[1:3]
        empty = torch.zeros((0, h, w, 2), dtype=torch.float64, device=self.device)
        fw = torch.cat(fws) if fws else empty
        bw = torch.cat(bws) if bws else empty
        return fw, bw, feats, (padder.pad[0], padder.pad[2])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ the window update

    def _corr(self, pyr: list[torch.Tensor], template: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """pyr: levels of (B·S, C, h, w); template (B, N, C); coords (B, S, N, 2) feature units →
        (B, S, N, levels·(2r+1)²). Dot products with bilinear feature samples (= sampling the
        correlation map, both being linear)."""
        b, s, n, _ = coords.shape
        c = template.shape[-1]
        offsets = window_offsets(self.cfg.corr_radius, coords.device, coords.dtype).reshape(1, 1, -1, 2)
        q = template[:, None].expand(b, s, n, c).reshape(b * s, n, c)
        centres = coords.reshape(b * s, n, 1, 2)
        out = [torch.einsum("bnc,bcnk->bnk", q, sample_bilinear(fm, centres / 2 ** lvl + offsets))
               for lvl, fm in enumerate(pyr)]
        return (torch.cat(out, dim=-1) / math.sqrt(c)).reshape(b, s, n, -1)

    def pyramid(self, feats: torch.Tensor) -> list[torch.Tensor]:
        pyr = [feats]
        for _ in range(self.cfg.corr_levels - 1):
            pyr.append(F.avg_pool2d(pyr[-1], 2, stride=2))
        return pyr

    def update(self, feats: torch.Tensor, template: torch.Tensor, init: torch.Tensor, fb_err: torch.Tensor,
               fb_ok: torch.Tensor, offset: tuple[int, int], size: tuple[int, int], iters: int | None = None,
               all_iters: bool = False):
        """Refine initial trajectories of one window.

        feats (B, S, C, h, w) features of the window's frames; template (B, N, C); init
        (B, S, N, 2) px (frame 0 = the anchor, kept fixed); fb_err (B, S, N) forward-backward
        error (px) of the chained step into each frame (0 at frame 0); fb_ok (B, S, N) bool;
        offset: the features' padding (left, top) px; size (H, W) of the frames.
        Returns (list of (B, S, N, 2) px per iteration, or only the last; vis logits (B, S, N))."""
        cfg = self.cfg
        b, s, c = feats.shape[:3]
        n = init.shape[2]
        if s != cfg.S:
            raise MotionRefineError(f"FlowPips windows have S={cfg.S} frames, got {s}")
        pyr = self.pyramid(feats.reshape(b * s, *feats.shape[2:]))
        off = torch.tensor(offset, dtype=init.dtype, device=init.device)
        H, W = size
        vel = torch.cat([torch.zeros_like(init[:, :1]), init[:, 1:] - init[:, :-1]], dim=1) / 8.0
        err = torch.log1p(fb_err.clamp(max=1e3))[..., None]
        prior = cfg.prior_logit * (2.0 * fb_ok.to(init.dtype) - 1.0)
        first = torch.zeros(1, s, 1, 1, dtype=init.dtype, device=init.device)
        first[:, 1:] = 1.0  # frame 0 is the anchor: no delta there
        coords = init
        preds, out = [], None
        for _ in range(iters or cfg.iters):
            coords = coords.detach()
            with torch.no_grad():  # frozen features, detached coordinates: nothing to differentiate here
                corr = self._corr(pyr, template, (coords + off) / 8.0)
            disp = (coords - init) / 8.0
            inside = ((coords[..., 0] >= 0) & (coords[..., 0] <= W - 1) & (coords[..., 1] >= 0)
                      & (coords[..., 1] <= H - 1)).to(init.dtype)[..., None]
            tok = torch.cat([corr, disp, vel, err, fb_ok.to(init.dtype)[..., None], inside], dim=-1)
            tok = tok.permute(0, 2, 1, 3).reshape(b * n, s, -1)
            out = self.mixer(tok).reshape(b, n, s, 3).permute(0, 2, 1, 3)
            coords = coords + cfg.delta_scale * out[..., :2] * first
            preds.append(coords)
        vis = prior + out[..., 2]
        return (preds if all_iters else preds[-1:]), vis

    # ------------------------------------------------------------------ long videos

    @torch.no_grad()
    def track(self, frames: np.ndarray, queries: np.ndarray, iters: int | None = None,
              flows=None) -> tuple[np.ndarray, np.ndarray]:
        """Track queries (N, 3) = [t, x, y] through frames (T, H, W, 3) uint8.

        Returns tracks (N, T, 2) float32 px and visibility logits (N, T) float32 (the query
        frame gets +inf, a position outside the frame −inf). ``flows``: a precomputed
        ``flow_and_features(frames)``."""
        frames = np.asarray(frames)
        queries = np.asarray(queries, dtype=np.float64)
        if frames.ndim != 4 or frames.shape[-1] != 3 or queries.ndim != 2 or queries.shape[1] != 3:
            raise MotionRefineError(f"expected frames (T, H, W, 3) and queries (N, 3), got {frames.shape}, "
                                    f"{queries.shape}")
        T, H, W = frames.shape[:3]
        n = len(queries)
        qt = queries[:, 0].round().astype(np.int64)
        if n and (qt.min() < 0 or qt.max() >= T):
            raise MotionRefineError(f"query frames must lie in [0, {T - 1}]")
        was = self.training
        self.eval()
        try:
            fw, bw, feats, offset = flows if flows is not None else self.flow_and_features(frames)
            tracks = torch.full((n, T, 2), float("nan"), dtype=torch.float64)
            logits = torch.zeros((n, T), dtype=torch.float64)
            q_xy = torch.from_numpy(queries[:, 1:])
            for t0 in np.unique(qt):
                sel = np.nonzero(qt == t0)[0]
                xy = q_xy[sel].to(self.device)
                template = sample_features(feats[int(t0)], xy, offset)
                for order, there, back in ((list(range(int(t0), T)), fw, bw),
                                           (list(range(int(t0), -1, -1)), bw, fw)):
                    if len(order) < 2:
                        continue
                    tr, lg = self.chain_windows(feats, order, there, back, xy, template, offset, (H, W), iters)
                    tracks[sel[:, None], order] = tr.cpu()
                    logits[sel[:, None], order] = lg.cpu()
                tracks[sel, int(t0)] = q_xy[sel]
                logits[sel, int(t0)] = float("inf")
        finally:
            self.train(was)
        # A point outside the frame is not visible (TAP-Vid's definition, and chained flow's):
        # the head never learnt this, as training supervises visibility inside the frame only.
        outside = (tracks[..., 0] < 0) | (tracks[..., 0] > W - 1) | (tracks[..., 1] < 0) | (tracks[..., 1] > H - 1)
        logits[outside] = float("-inf")
        return tracks.float().numpy(), logits.float().numpy()

    def chain_windows(self, feats, order: list[int], there, back, xy: torch.Tensor, template: torch.Tensor,
                      offset, size, iters=None):
        """Tracks along frame ``order`` (consecutive, either direction) from positions xy (n, 2)
        at order[0]; ``there``/``back`` are the flow stacks of that direction (pair index =
        min of the two frames). Returns (n, len(order), 2) float64 px and logits (n, len(order))."""
        S = self.cfg.S
        L = len(order)
        n = len(xy)
        out = torch.zeros((n, L, 2), dtype=torch.float64, device=xy.device)
        lg = torch.zeros((n, L), dtype=torch.float64, device=xy.device)
        a, pos = 0, xy.to(torch.float64)
        while a < L - 1:
            idx = [order[min(a + k, L - 1)] for k in range(S)]  # a short tail repeats the last frame
            real = min(S, L - a)
            init, err, ok = chain_init(there, back, idx[:real], pos, size, self.cfg.fb_alpha, self.cfg.fb_beta)
            if real < S:  # pad: repeat the last frame's state
                pad = S - real
                init = torch.cat([init, init[-1:].expand(pad, n, 2)])
                err = torch.cat([err, err[-1:].expand(pad, n)])
                ok = torch.cat([ok, ok[-1:].expand(pad, n)])
            preds, vis = self.update(feats[idx][None].float(), template[None].float(), init[None].float(),
                                     err[None].float(), ok[None], offset, size, iters)
            # Delta added in float32 to the float64 chain: a zero delta leaves chained flow exact.
            delta = (preds[-1][0] - init.float()).to(torch.float64)
            ref = init + delta
            out[:, a:a + real] = ref[:real].transpose(0, 1)
            lg[:, a:a + real] = vis[0, :real].transpose(0, 1).to(torch.float64)
            pos = ref[real - 1]
            a += S - 1
        return out, lg

    # ------------------------------------------------------------------ build, load, save

    def load_raft(self, raft_path: str | os.PathLike, expected_sha256: str | None = None) -> str:
        """Put the RAFT-small weights ``raft_path`` under the tracker (still frozen). Returns their sha256."""
        from motionrefine.models.checkpoint import load_state_strict, read_state_dict

        state, digest = read_state_dict(raft_path, expected_sha256)
        load_state_strict(self.raft, state, str(raft_path))
        self.raft_sha256 = digest
        return digest

    @classmethod
    def from_raft(cls, raft_path: str | os.PathLike, expected_sha256: str | None = None,
                  cfg: FlowPipsConfig | None = None, **overrides) -> "FlowPips":
        """An untrained tracker (update output at zero) on the RAFT-small weights ``raft_path``."""
        model = cls(cfg, **overrides)
        model.load_raft(raft_path, expected_sha256)
        return model


def sample_features(fmap: torch.Tensor, xy: torch.Tensor, offset) -> torch.Tensor:
    """Feature (C, h, w) at pixel positions xy (n, 2) of the unpadded frame → (n, C)."""
    off = torch.tensor(offset, dtype=torch.float64, device=xy.device)
    f = (xy.to(torch.float64) + off) / 8.0
    return sample_bilinear(fmap[None].float(), f[None, :, None, :].float(), padding_mode="border")[0, :, :, 0].T


def flow_at(flow: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Flow (H, W, 2) float64 sampled at xy (n, 2) → (n, 2); border padding (as ``chain._flow_at``)."""
    f = flow.to(torch.float64).permute(2, 0, 1)[None]
    return sample_bilinear(f, xy[None, :, None, :].to(f.dtype), padding_mode="border")[0, :, :, 0].T


def chain_init(there, back, idx: list[int], xy: torch.Tensor, size, alpha: float, beta: float):
    """Chained flow from xy (n, 2) at frame idx[0] through frames idx (consecutive, either
    direction), exactly as ``chain.chain_flow_tracks``. Returns positions (len(idx), n, 2)
    float64, forward-backward error (len(idx), n) and check passed (len(idx), n) bool (frame 0: 0, True)."""
    H, W = size
    p = xy.to(torch.float64)
    pos, errs, oks = [p], [torch.zeros(len(p), dtype=torch.float64, device=p.device)], \
        [torch.ones(len(p), dtype=torch.bool, device=p.device)]
    for t, t1 in zip(idx[:-1], idx[1:]):
        pair = min(t, t1)
        u = flow_at(there[pair], p)
        p1 = p + u
        v = flow_at(back[pair], p1)
        err = torch.linalg.vector_norm(u + v, dim=1)
        thr = alpha * (torch.linalg.vector_norm(u, dim=1) + torch.linalg.vector_norm(v, dim=1)) + beta
        inside = (p1[:, 0] >= 0) & (p1[:, 0] <= W - 1) & (p1[:, 1] >= 0) & (p1[:, 1] <= H - 1)
        ok = (err < thr) & torch.isfinite(err) & inside & torch.isfinite(p1).all(1)
        pos.append(p1)
        errs.append(torch.nan_to_num(err, nan=1e3, posinf=1e3))
        oks.append(ok)
        p = p1
    return torch.stack(pos), torch.stack(errs), torch.stack(oks)


def load_flowpips(path: str | os.PathLike, raft_checkpoint: str | os.PathLike | None,
                  expected_sha256: str | None = None) -> tuple[FlowPips, str]:
    """A saved tracker (``save_flowpips``) on the RAFT-small weights ``raft_checkpoint``, which
    must be the file it was trained on (its sha256 is in the tracker file). In eval mode.
    Returns (model, sha256 of the tracker file)."""
    from motionrefine.core.store import sha256_file
    from motionrefine.models.checkpoint import load_state_strict, read_torch_file

    if raft_checkpoint is None:
        raise CheckpointError(f"tracker {path} needs the RAFT-small weights it runs on "
                              "(raft_checkpoint; in the workflow, config key tracking.raft)")
    obj, digest = read_torch_file(path, expected_sha256, "weights/README.md")
    if not isinstance(obj, dict) or not {"flowpips_config", "mixer_state_dict", "raft_sha256"} <= set(obj):
        raise CheckpointError(f"{path} is not a FlowPips checkpoint (needs 'flowpips_config', "
                              "'mixer_state_dict' and 'raft_sha256')")
    raft_digest = sha256_file(raft_checkpoint) if Path(raft_checkpoint).is_file() else None
    if raft_digest is not None and raft_digest != obj["raft_sha256"]:
        raise CheckpointError(f"tracker {path} runs on RAFT-small weights with sha256 {obj['raft_sha256']}, "
                              f"but {raft_checkpoint} has sha256 {raft_digest}")
    model = FlowPips.from_raft(raft_checkpoint, obj["raft_sha256"], FlowPipsConfig(**obj["flowpips_config"]))
    load_state_strict(model.mixer, obj["mixer_state_dict"], str(path))
    model.eval()
    return model, digest


def save_flowpips(model: FlowPips, path: str | os.PathLike) -> str:
    """Write the tracker's own weights (the mixer), its config and the sha256 of the frozen
    RAFT-small it runs on, atomically; RAFT itself stays in its own file. Returns sha256."""
    from motionrefine.core.store import save_atomic

    if model.raft_sha256 is None:
        raise CheckpointError("this FlowPips has no RAFT-small weights loaded (build it with FlowPips.from_raft)")
    return save_atomic({"mixer_state_dict": {k: v.detach().cpu() for k, v in model.mixer.state_dict().items()},
                        "flowpips_config": model.cfg.to_dict(), "raft_sha256": model.raft_sha256}, path)


def raft_for_tracker(path: str | os.PathLike, candidates) -> str:
    """Of the RAFT-small files ``candidates``, the one the tracker ``path`` was trained on (by the sha256 in it)."""
    from motionrefine.core.store import sha256_file
    from motionrefine.models.checkpoint import read_torch_file

    obj, _ = read_torch_file(path, None, "weights/README.md")
    want = obj.get("raft_sha256") if isinstance(obj, dict) else None
    for c in candidates:
        if Path(c).is_file() and sha256_file(c) == want:
            return str(c)
    raise CheckpointError(f"tracker {path} runs on RAFT-small weights with sha256 {want}; none of "
                          f"{', '.join(map(str, candidates))} is that file (config keys infer.tracker, infer.checkpoint)")
