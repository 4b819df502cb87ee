"""Frozen-model flow inference over videos (the label-making input).

Each frame's matching features and context are computed once and shared by the pairs
(t−1, t) and (t, t+1) and by both time directions: a video of T frames costs T encoder
passes instead of 4(T−1).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from motionrefine import __version__
from motionrefine.core.device import pick_device
from motionrefine.models.checkpoint import load_raft
from motionrefine.flow.teacher import Teacher, TeacherSettings, pair_windows
from motionrefine.core.errors import MotionRefineError
from motionrefine.models.raft import RAFT, InputPadder
from motionrefine.core.limits import CORR_CHUNK_BYTES, RAFT_MIN_SIDE as MIN_SIDE
from motionrefine.core.store import atomic_group, create_array, open_group
from motionrefine.io.video import frames_source

log = logging.getLogger("motionrefine")


class FlowEstimator:
    """Runs RAFT on numpy frames (H, W, 3) uint8 RGB; returns flow as (…, H, W, 2) float32."""

    def __init__(self, model: RAFT, iters: int = 12, padding: str = "even", device: torch.device | None = None,
                 max_corr_bytes: int | None = CORR_CHUNK_BYTES):
        """``max_corr_bytes``: refine a batch in chunks whose all-pairs correlation volumes
        stay under this many bytes, at least one direction each (None: one batch). Each
        direction's flow is independent of the others in its batch, so chunking bounds memory
        (and time, on a CPU) without changing the method."""
        self.model = model.eval()
        self.iters = iters
        self.padding = padding
        self.device = device or next(model.parameters()).device
        self.max_corr_bytes = max_corr_bytes

    def _to_tensor(self, frames: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        return t.permute(0, 3, 1, 2).float()

    @torch.inference_mode()
    def encode(self, frames: np.ndarray):
        """Encode (N, H, W, 3) frames once: (features, (net, inp), padder)."""
        images = self._to_tensor(frames)
        if min(images.shape[-2:]) < MIN_SIDE:
            raise MotionRefineError(f"frames of {images.shape[-1]}x{images.shape[-2]} px are too small for RAFT: "
                                    f"both sides must be at least {MIN_SIDE} px (a sample's `resize` sets them)")
        padder = InputPadder(images.shape, self.padding)
        images = padder.pad_images(images)
        return self.model.encode_features(images), self.model.encode_context(images), padder

    @torch.inference_mode()
    def refine_pairs(self, feats, ctx, padder, src: list[int], dst: list[int]) -> np.ndarray:
        """Flow from frame src[k] to dst[k] for every k, all in one batch."""
        net, inp = ctx
        chunk = self._chunk(feats, len(src))
        out = []
        for i in range(0, len(src), chunk):
            s, d = src[i:i + chunk], dst[i:i + chunk]
            preds, _ = self.model.refine(feats[s], feats[d], net[s], inp[s], self.iters, all_iters=False)
            out.append(padder.unpad(preds[-1]).permute(0, 2, 3, 1).float().cpu().numpy())
        return out[0] if len(out) == 1 else np.concatenate(out)

    def _chunk(self, feats: torch.Tensor, n: int) -> int:
        h, w = feats.shape[-2:]
        alt = self.model.alternate_corr_pixels
        if self.max_corr_bytes is None or (alt is not None and h * w > alt):
            return n  # on-demand correlation holds no volume
        per_direction = 4 * (h * w) ** 2 * 4 / 3  # float32 volume and its pyramid
        return max(1, min(n, int(self.max_corr_bytes // per_direction)))

    def pairs(self, frames: np.ndarray, backward: bool = True):
        """Consecutive pairs of (N, H, W, 3) frames → forward (N−1, H, W, 2) and backward flow.

        backward[t] is the flow from frame t+1 to frame t."""
        feats, ctx, padder = self.encode(frames)
        n = len(frames)
        src = list(range(n - 1))
        dst = list(range(1, n))
        if backward:
            out = self.refine_pairs(feats, ctx, padder, src + dst, dst + src)
            return out[: n - 1], out[n - 1:]
        return self.refine_pairs(feats, ctx, padder, src, dst), None

    def flow(self, image1: np.ndarray, image2: np.ndarray) -> np.ndarray:
        """Single pair, (H, W, 2)."""
        fw, _ = self.pairs(np.stack([image1, image2]), backward=False)
        return fw[0]


def sanitise_flow(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(N, H, W, 2) flow → (float32 flow with non-finite values as 0, (N,) pair finite, number of bad values)."""
    bad = ~np.isfinite(flow)
    if not bad.any():
        return flow.astype(np.float32, copy=False), np.ones(len(flow), bool), 0
    return (np.where(bad, 0.0, flow).astype(np.float32), ~bad.reshape(len(flow), -1).any(axis=1), int(bad.sum()))


def load_teacher(checkpoint: str, teacher: TeacherSettings, variant: str = "small", padding: str = "even",
                 expected_sha256: str | None = None, alternate_corr_pixels: int | None = None,
                 device: str = "auto", threads: int = 1):
    """(Teacher, checkpoint sha256, device): the frozen model as the label-maker."""
    dev = pick_device(device, threads)
    model, digest = load_raft(checkpoint, variant, expected_sha256, alternate_corr_pixels)
    model.to(dev)
    est = FlowEstimator(model, teacher.iters, padding, dev)
    return Teacher(est, teacher), digest, dev


def flow_store_attrs(frames_path, checkpoint, digest, variant, iters, padding, size, n_pairs, store_dtype,
                     nonfinite, dev, elapsed, teacher=None) -> dict:
    """A flow store's attrs: what made it, from which frames, how fast. ``teacher``: (settings,
    views, selected pairs) when the label-maker made it."""
    h, w = size
    store_dtype = np.dtype(store_dtype)
    out = {
        "model": f"raft-{variant}", "checkpoint": str(checkpoint), "checkpoint_sha256": digest,
        "iters": iters, "padding": padding, "input_size": [h, w], "pairs": n_pairs,
        "dtype": str(store_dtype),
        "dtype_error_bound_px": _dtype_bound(store_dtype),
        "nonfinite_values": nonfinite, "device": str(dev), "seconds": round(elapsed, 3),
        "frames_source": frames_source(dict(open_group(frames_path).attrs)), "code_version": __version__,
        "convention": "flow_fw[t]: frame t -> t+1; flow_bw[t]: frame t+1 -> t; (u, v) in pixels",
        "teacher": None,
    }
    if teacher is not None:
        settings, views, selected = teacher
        out["teacher"] = teacher_attrs(settings, views, selected, n_pairs)
        out["computed_pairs"] = int(len(selected))
    return out


def teacher_attrs(settings: TeacherSettings, views, selected: np.ndarray, n_pairs: int) -> dict:
    """The label-maker as recorded in its flow and label stores: settings, views, label budget."""
    return {**settings.as_attrs(), "views": views, "label_budget": settings.budget_attrs(selected, n_pairs)}


def write_pair_masks(g, pair_finite: np.ndarray, selected: np.ndarray | None = None) -> None:
    """A flow store's per-pair masks: ``pair_finite``, and ``pair_computed`` (True for the
    ``selected`` pairs) when a label budget chose which pairs to compute."""
    g.create_array("pair_finite", data=pair_finite)
    if selected is not None:
        computed = np.zeros(len(pair_finite), bool)
        computed[selected] = True
        g.create_array("pair_computed", data=computed)


def flow_stage(frames_path: str, out_path: str, checkpoint: str, variant: str = "small", iters: int = 12,
               batch_size: int = 4, threads: int = 1, expected_sha256: str | None = None, padding: str = "even",
               dtype: str = "float32", alternate_corr_pixels: int | None = None, device: str = "auto",
               progress: bool = True, teacher: TeacherSettings | None = None, extra_attrs: dict | None = None) -> dict:
    """Forward and backward flow for every consecutive pair of a frames store → Zarr.
    ``extra_attrs``: merged into the store's attrs (written with it, atomically).

    ``teacher``: run the frozen model as the label-maker (``flow.teacher``: its views and
    iterations replace ``iters``); the store records the teacher's settings.

    Frames are processed in windows of ``batch_size`` pairs that share their boundary
    frame, so memory is bounded by the window, not the video. Non-finite flow values are
    counted and stored as NaN-free zeros with ``finite`` = False, never passed on silently.
    """
    frames = open_group(frames_path)["frames"]
    t, h, w, _ = frames.shape
    if teacher is not None:
        iters = teacher.iters
        est, digest, dev = load_teacher(checkpoint, teacher, variant, padding, expected_sha256, alternate_corr_pixels,
                                        device, threads)
    else:
        dev = pick_device(device, threads)
        model, digest = load_raft(checkpoint, variant, expected_sha256, alternate_corr_pixels)
        model.to(dev)
        est = FlowEstimator(model, iters, padding, dev)
    if t < 2:
        from motionrefine.core.errors import VideoError

        raise VideoError(f"{frames_path}: needs at least 2 frames for flow, has {t}")
    n_pairs = t - 1
    # The teacher computes the pairs of its label budget only (all pairs when within it).
    selected = teacher.select_pairs(n_pairs, h, w) if teacher is not None else np.arange(n_pairs)
    store_dtype = np.dtype(dtype)
    started = time.perf_counter()
    nonfinite = 0
    with atomic_group(out_path) as g:
        fw_arr = create_array(g, "flow_fw", (n_pairs, h, w, 2), store_dtype)
        bw_arr = create_array(g, "flow_bw", (n_pairs, h, w, 2), store_dtype)
        finite = np.ones(n_pairs, dtype=bool)
        bar = _progress(len(selected), progress, Path(out_path).name)
        for s, e in pair_windows(selected, batch_size):
            fw, bw = est.pairs(np.asarray(frames[s:e + 1]))
            for arr, flow in ((fw_arr, fw), (bw_arr, bw)):
                flow, ok, bad = sanitise_flow(flow)
                nonfinite += bad
                finite[s:e] &= ok
                arr[s:e] = flow.astype(store_dtype)
            bar.update(e - s)
        bar.close()
        write_pair_masks(g, finite, selected if teacher is not None else None)
        elapsed = time.perf_counter() - started
        g.attrs.update(flow_store_attrs(frames_path, checkpoint, digest, variant, iters, padding, (h, w), n_pairs,
                                        store_dtype, nonfinite, dev, elapsed,
                                        None if teacher is None else (teacher, est.views(h, w), selected)))
        g.attrs.update(dict(extra_attrs or {}))
    log.info("%s: %d of %d pairs in %.1f s (%.2f s/pair), %d non-finite values", out_path, len(selected), n_pairs,
             elapsed, elapsed / len(selected), nonfinite)
    return {"pairs": n_pairs, "computed_pairs": int(len(selected)), "seconds": elapsed, "nonfinite": nonfinite, "checkpoint_sha256": digest}


def _dtype_bound(dtype: np.dtype) -> str:
    if dtype == np.float16:
        # float16 has an 11-bit significand: relative error ≤ 2^-11 (≈ 0.0005·|u|, < 0.25 px below 512 px).
        return "relative 4.9e-4 (float16 rounding)"
    return "exact (float32)"


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="pair", mininterval=2.0)
