"""The label stage: cycle-verified flow pseudo-labels per video.

``make_flow_labels`` streams pairs from a frames store and a flow store (see
``inference.flow_stage``), verifies them with :mod:`motionrefine.flow.cycle` and writes, atomically:

    flow   (P, H, W, 2) float32   F_f where kept, else 0
    keep   (P, H, W)    bool
    kept_fraction (P,), kept_count (P,), pixels_by_bin / kept_by_bin (P, K) int64,
    kept_fraction_by_bin (P, K) (NaN = empty bin), rejected (P, 4) int64 (attr ``columns``),
    speed_bin_edges (K+1,)

A pair the flow stage flagged as non-finite (``pair_finite`` False; its bad values were
stored as zeros) is rejected whole under ``non_finite``: which pixels were bad is unknown.

The training-set index over these stores (``aggregate_labels``, ``load_training_pairs``,
``label_stats_table``) is ``flow.trainset``'s; the names stay importable from here.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Sequence

import numpy as np
import torch

from motionrefine import __version__
from motionrefine.flow.cycle import DEFAULT_SPEED_EDGES, REASONS, CycleThresholds, check_speed_edges, pair_stats, verify_flow
from motionrefine.flow.inference import flow_store_attrs, load_teacher, sanitise_flow, teacher_attrs, write_pair_masks
from motionrefine.flow.teacher import TeacherSettings, pair_windows
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import atomic_group, create_array, open_group, write_array
from motionrefine.flow.trainset import (INDEX_FORMAT, TrainingPair, aggregate_labels,  # noqa: F401 (re-exported)
                                        label_stats_table, load_training_pairs, video_name)
from motionrefine.flow.trainset import fingerprint as _fingerprint
from motionrefine.io.video import frames_source

log = logging.getLogger("motionrefine")


def make_flow_labels(frames_path: str, flow_path: str, out_path: str, alpha: float = 0.002, beta: float = 0.1,
                     colour: float = 0.005, max_flow: float = 400.0, checks: str = "fb+colour",
                     speed_bins: Sequence[float] = DEFAULT_SPEED_EDGES, batch_size: int = 4,
                     progress: bool = False, threads: int | None = 1, colour_norm: str = "raw") -> dict:
    """Cycle-verify every pair of one video and write its label store. Returns a summary dict.

    ``threads``: torch CPU threads for the verification (restored afterwards; None leaves
    torch's setting alone). Verification is a chain of small elementwise ops: on a loaded
    machine extra OpenMP threads mostly spin at barriers (measured 5x the CPU time of one
    thread with 2 threads on a shared 2-core box, see docs/performance.md), so the default
    is 1, matching the labels rule's ``threads: 1``.
    """
    with torch_threads(threads):
        return _make_flow_labels(frames_path, flow_path, out_path, alpha, beta, colour, max_flow, checks,
                                 speed_bins, batch_size, progress, colour_norm)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` torch CPU threads, restoring the previous count."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _LabelWriter:
    """The arrays of one label store, filled window by window from in-memory flow.

    Both ways of making labels go through it (flow read back from a store, or the teacher's
    flow straight from the model), so they write the same arrays from the same flow."""

    def __init__(self, g, p_count: int, h: int, w: int, th: CycleThresholds, edges: list[float]):
        self.g, self.th, self.edges = g, th, edges
        n_bins = len(edges) - 1
        self.flow_out = create_array(g, "flow", (p_count, h, w, 2), np.float32)
        self.keep_out = create_array(g, "keep", (p_count, h, w), bool)
        # The reverse pairs (t+1 -> t) are verified the same way with the roles swapped:
        # twice the training pairs from the same inference.
        self.flow_bw_out = create_array(g, "flow_bw", (p_count, h, w, 2), np.float32)
        self.keep_bw_out = create_array(g, "keep_bw", (p_count, h, w), bool)
        self.labelled = np.zeros(p_count, bool)
        self.kept_fraction = np.zeros(p_count, np.float64)
        self.kept_fraction_bw = np.zeros(p_count, np.float64)
        self.kept_count = np.zeros(p_count, np.int64)
        self.pixels_by_bin = np.zeros((p_count, n_bins), np.int64)
        self.kept_by_bin = np.zeros((p_count, n_bins), np.int64)
        # NaN = empty bin; a pair outside the label budget has every bin empty.
        self.frac_by_bin = np.full((p_count, n_bins), np.nan, np.float64)
        self.rejected = np.zeros((p_count, len(REASONS)), np.int64)

    def add(self, s: int, e: int, frames: np.ndarray, fw: np.ndarray, bw: np.ndarray, finite: np.ndarray) -> None:
        """Verify pairs s..e-1: frames (e-s+1, H, W, 3), fw/bw (e-s, H, W, 2) float32 with
        non-finite values stored as 0, ``finite`` (e-s,) False for such pairs."""
        th = self.th
        imgs = torch.from_numpy(np.asarray(frames)).permute(0, 3, 1, 2).float()
        ff = torch.from_numpy(np.asarray(fw, dtype=np.float32)).permute(0, 3, 1, 2)
        fb = torch.from_numpy(np.asarray(bw, dtype=np.float32)).permute(0, 3, 1, 2)
        bad_pairs = torch.from_numpy(~np.asarray(finite, bool))
        if bad_pairs.any():
            ff = ff.clone()
            ff[bad_pairs] = float("nan")
        res = verify_flow(ff, fb, imgs[:-1], imgs[1:], th.alpha, th.beta, th.colour, th.max_flow, th.checks,
                          th.colour_norm)
        if bad_pairs.any():
            fb = fb.clone()
            fb[bad_pairs] = float("nan")
        res_bw = verify_flow(fb, ff, imgs[1:], imgs[:-1], th.alpha, th.beta, th.colour, th.max_flow, th.checks,
                             th.colour_norm)
        self.flow_bw_out[s:e] = torch.where(res_bw.keep[:, None], torch.nan_to_num(fb),
                                            torch.zeros_like(fb)).permute(0, 2, 3, 1).numpy()
        self.keep_bw_out[s:e] = res_bw.keep.numpy()
        self.kept_fraction_bw[s:e] = res_bw.keep.flatten(1).float().mean(1).numpy()
        st = pair_stats(res, self.edges)
        keep = res.keep
        self.flow_out[s:e] = torch.where(keep[:, None], torch.nan_to_num(ff), torch.zeros_like(ff)).permute(0, 2, 3, 1).numpy()
        self.keep_out[s:e] = keep.numpy()
        self.labelled[s:e] = True
        self.kept_fraction[s:e] = st["kept_fraction"].numpy()
        self.kept_count[s:e] = st["kept_count"].numpy()
        self.pixels_by_bin[s:e] = st["pixels_by_bin"].numpy()
        self.kept_by_bin[s:e] = st["kept_by_bin"].numpy()
        self.frac_by_bin[s:e] = st["kept_fraction_by_bin"].numpy()
        self.rejected[s:e] = st["rejected"].numpy()

    def finish(self) -> None:
        g = self.g
        write_array(g, "labelled", self.labelled)
        write_array(g, "kept_fraction", self.kept_fraction)
        write_array(g, "kept_fraction_bw", self.kept_fraction_bw)
        write_array(g, "kept_count", self.kept_count)
        write_array(g, "pixels_by_bin", self.pixels_by_bin)
        write_array(g, "kept_by_bin", self.kept_by_bin)
        write_array(g, "kept_fraction_by_bin", self.frac_by_bin)
        write_array(g, "rejected", self.rejected, columns=list(REASONS))
        write_array(g, "speed_bin_edges", np.asarray(self.edges, np.float64))


def _label_attrs(out_path, frames_path, frames_g, frames, th: CycleThresholds, edges, writer: _LabelWriter,
                 non_finite_pairs: int, seconds: float, checkpoint_sha256, flow_store: dict,
                 budget: dict | None) -> dict:
    t, h, w, _ = frames.shape
    p_count = len(writer.labelled)
    labelled = int(writer.labelled.sum())
    pixels = labelled * h * w
    return {
        "kind": "flow_labels",
        "video": video_name(out_path),
        "pairs": int(p_count), "input_size": [int(h), int(w)],
        "labelled_pairs": labelled,
        # Which pairs carry labels; the others (outside the teacher's label budget) have
        # labelled False, keep False everywhere, and are never indexed for training.
        "label_budget": budget,
        "checkpoint_sha256": checkpoint_sha256,
        "thresholds": {"alpha": th.alpha, "beta": th.beta, "colour": th.colour, "max_flow": th.max_flow,
                       "colour_norm": th.colour_norm},
        "checks": th.checks,
        "fb_threshold_uses": "|F_b| sampled at x + F_f(x) (official code: |F_b(x)|)",
        "speed_bins": edges,
        "rejected_columns": list(REASONS),
        "rejection_reasons_overlap": "yes, except non_finite which excludes the others",
        "kept_fraction_total": int(writer.kept_count.sum()) / max(pixels, 1),
        "non_finite_pairs": int(non_finite_pairs),
        "code_version": __version__,
        "seconds": round(seconds, 3),
        "frames_store": {"path": str(frames_path), "shape": list(frames.shape),
                         "source": frames_source(dict(frames_g.attrs)),
                         "fingerprint": _fingerprint(frames, 0, t - 1)},
        "flow_store": flow_store,
        "convention": "flow[p]: frame p -> p+1 where keep[p], else 0; flow_bw[p]: frame p+1 -> p "
                      "where keep_bw[p]; (u, v) in pixels; only pairs with labelled[p]",
    }


def _make_flow_labels(frames_path, flow_path, out_path, alpha, beta, colour, max_flow, checks, speed_bins,
                      batch_size, progress, colour_norm="raw") -> dict:
    th = CycleThresholds(alpha, beta, colour, max_flow, checks, colour_norm)
    edges = check_speed_edges(speed_bins)
    frames_g = open_group(frames_path)
    flow_g = open_group(flow_path)
    for key, g, p in (("frames", frames_g, frames_path), ("flow_fw", flow_g, flow_path), ("flow_bw", flow_g, flow_path)):
        if key not in g:
            raise MotionRefineError(f"{p}: no array '{key}' in the store")
    frames, fw_arr, bw_arr = frames_g["frames"], flow_g["flow_fw"], flow_g["flow_bw"]
    t, h, w, _ = frames.shape
    p_count = fw_arr.shape[0]
    if fw_arr.shape != (t - 1, h, w, 2) or bw_arr.shape != fw_arr.shape:
        raise MotionRefineError(
            f"{flow_path}: flow shapes {fw_arr.shape}/{bw_arr.shape} do not fit frames {frames.shape} of {frames_path}"
            " (expected (T-1, H, W, 2)); was the flow computed from these frames?")
    pair_finite = np.asarray(flow_g["pair_finite"][:]) if "pair_finite" in flow_g else np.ones(p_count, bool)
    # A teacher store under a label budget holds only some pairs; those are the ones labelled.
    computed = np.asarray(flow_g["pair_computed"][:], bool) if "pair_computed" in flow_g else np.ones(p_count, bool)
    flow_attrs = dict(flow_g.attrs)
    started = time.perf_counter()
    with atomic_group(out_path) as g:
        writer = _LabelWriter(g, p_count, h, w, th, edges)
        for s, e in pair_windows(np.flatnonzero(computed), batch_size):
            writer.add(s, e, np.asarray(frames[s:e + 1]), np.asarray(fw_arr[s:e], dtype=np.float32),
                       np.asarray(bw_arr[s:e], dtype=np.float32), pair_finite[s:e])
            if progress:
                log.info("%s: pairs %d-%d, kept %.3f", video_name(out_path), s, e - 1, writer.kept_fraction[s:e].mean())
        writer.finish()
        elapsed = time.perf_counter() - started
        flow_store = {"path": str(flow_path), "fingerprint": _fingerprint(fw_arr, 0),
                      **{k: flow_attrs.get(k) for k in ("model", "checkpoint", "iters", "padding", "teacher", "code_version")}}
        attrs = _label_attrs(out_path, frames_path, frames_g, frames, th, edges, writer,
                             int((~pair_finite[computed]).sum()), elapsed, flow_attrs.get("checkpoint_sha256"),
                             flow_store, (flow_attrs.get("teacher") or {}).get("label_budget"))
        g.attrs.update(attrs)
    return _summary(out_path, attrs, writer, elapsed)


def _summary(out_path, attrs: dict, writer: _LabelWriter, elapsed: float) -> dict:
    log.info("%s: %d of %d pairs labelled, kept %.2f%% of their pixels in %.1f s", out_path,
             attrs["labelled_pairs"], attrs["pairs"], 100.0 * attrs["kept_fraction_total"], elapsed)
    return {"pairs": attrs["pairs"], "labelled_pairs": attrs["labelled_pairs"],
            "kept_fraction": attrs["kept_fraction_total"], "seconds": elapsed,
            "checkpoint_sha256": attrs["checkpoint_sha256"]}


def make_teacher_labels(frames_path: str, out_path: str, checkpoint: str, teacher: TeacherSettings,
                        variant: str = "small", batch_size: int = 4, expected_sha256: str | None = None,
                        padding: str = "even", alternate_corr_pixels: int | None = None, device: str = "auto",
                        threads: int = 1, alpha: float = 0.002, beta: float = 0.1, colour: float = 0.005,
                        max_flow: float = 400.0, checks: str = "fb+colour", colour_norm: str = "raw",
                        speed_bins: Sequence[float] = DEFAULT_SPEED_EDGES, verify_threads: int | None = 1,
                        progress: bool = False, flow_out: str | None = None) -> dict:
    """The teacher's flow of the pairs in its label budget, verified as it is made: one job
    from frames to the label store, no flow store written and read back.

    ``flow_out``: also write the teacher's flow as a flow store (the layout of ``flow_stage``),
    from the same in-memory flow: the tracker's chained-teacher labels and the teacher's
    evaluation read it, so the teacher does not run twice.

    The labels equal ``flow_stage(teacher=...)`` followed by ``make_flow_labels`` on that
    store (the same windows, the same float32 flow, the same non-finite handling).
    ``threads`` are the model's torch threads; verification runs with ``verify_threads``
    (see ``make_flow_labels``)."""
    th = CycleThresholds(alpha, beta, colour, max_flow, checks, colour_norm)
    edges = check_speed_edges(speed_bins)
    frames_g = open_group(frames_path)
    if "frames" not in frames_g:
        raise MotionRefineError(f"{frames_path}: no array 'frames' in the store")
    frames = frames_g["frames"]
    t, h, w, _ = frames.shape
    if t < 2:
        from motionrefine.core.errors import VideoError

        raise VideoError(f"{frames_path}: needs at least 2 frames for flow, has {t}")
    est, digest, dev = load_teacher(checkpoint, teacher, variant, padding, expected_sha256, alternate_corr_pixels,
                                    device, threads)
    p_count = t - 1
    selected = teacher.select_pairs(p_count, h, w)
    started = time.perf_counter()
    non_finite = 0
    with contextlib.ExitStack() as stack:
        g = stack.enter_context(atomic_group(out_path))
        writer = _LabelWriter(g, p_count, h, w, th, edges)
        fg = stack.enter_context(atomic_group(flow_out)) if flow_out else None
        if fg is not None:
            flow_arrays = (create_array(fg, "flow_fw", (p_count, h, w, 2), np.float32),
                           create_array(fg, "flow_bw", (p_count, h, w, 2), np.float32))
            pair_finite = np.ones(p_count, bool)
            flow_nonfinite = 0
        for s, e in pair_windows(selected, batch_size):
            window = np.asarray(frames[s:e + 1])
            fw, bw = est.pairs(window)
            (fw, ok_f, bad_f), (bw, ok_b, bad_b) = sanitise_flow(fw), sanitise_flow(bw)
            finite = ok_f & ok_b
            non_finite += int((~finite).sum())
            if fg is not None:
                flow_arrays[0][s:e], flow_arrays[1][s:e] = fw, bw
                pair_finite[s:e] &= finite
                flow_nonfinite += bad_f + bad_b
            with torch_threads(verify_threads):
                writer.add(s, e, window, fw, bw, finite)
            if progress:
                log.info("%s: pairs %d-%d, kept %.3f", video_name(out_path), s, e - 1, writer.kept_fraction[s:e].mean())
        writer.finish()
        elapsed = time.perf_counter() - started
        if fg is not None:
            write_pair_masks(fg, pair_finite, selected)
            fg.attrs.update(flow_store_attrs(frames_path, checkpoint, digest, variant, teacher.iters, padding, (h, w),
                                             p_count, np.float32, flow_nonfinite, dev, elapsed,
                                             (teacher, est.views(h, w), selected)))
        made_by = teacher_attrs(teacher, est.views(h, w), selected, p_count)
        flow_store = {"path": None, "fused": True, "fingerprint": None, "model": f"raft-{variant}",
                      "checkpoint": str(checkpoint), "iters": teacher.iters, "padding": padding,
                      "teacher": made_by, "code_version": __version__, "device": str(dev)}
        attrs = _label_attrs(out_path, frames_path, frames_g, frames, th, edges, writer, non_finite, elapsed,
                             digest, flow_store, made_by["label_budget"])
        g.attrs.update(attrs)
    return _summary(out_path, attrs, writer, elapsed)
