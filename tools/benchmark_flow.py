#!/usr/bin/env python
"""Flow-stage benchmarks (figures, not tests): speed, feature reuse, memory of both correlation paths.

    python tools/benchmark_flow.py speed   [--sizes 256x448 436x1024] [--pairs 4] [--repeat 3]
    python tools/benchmark_flow.py memory  [--sizes 540x960 1080x1920]
    python tools/benchmark_flow.py labels  [--video PATH] [--frames 16 32] [--resize 448x256] [--repeat 3]
    python tools/benchmark_flow.py finetune [--profiles demo paper] [--steps 3] [--repeat 3] [--threads 2]
    python tools/benchmark_flow.py teacher [--sizes 240x432 540x960] [--pairs 2] [--video PATH]
    python tools/benchmark_flow.py all

Every figure is printed with the machine, torch threads and settings. Timings are repeated
``--repeat`` times and the median is printed (``"summary": true`` rows) next to every
repeat; wall time and process CPU time are both given, because on a shared machine wall
time includes waiting for the cores. CUDA work is synchronised before every clock read.
Memory is the peak RSS of a fresh child process per measurement (ru_maxrss), so runs
don't inherit peaks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = ROOT.parent / "shared" / "weights" / "raft-small.pth"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()} {cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {gpu}"


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Real-looking input is not needed for timing; a smooth random texture shifted per frame."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (h + 64, w + 64, 3), dtype=np.uint8), (0, 0), 3)
    return np.stack([base[8 + i: 8 + i + h, 8 + 2 * i: 8 + 2 * i + w] for i in range(n)])


def _sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class _Clock:
    """Wall (perf_counter) and process CPU time between two CUDA-synchronised reads."""

    def __enter__(self):
        _sync()
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        _sync()
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0


def _median_row(rows: list[dict], keep: dict) -> dict:
    """Median over repeats of every numeric field of ``rows``; ``keep`` fields copied as they are."""
    out = dict(keep, summary=True, repeats=len(rows))
    for k, v in rows[0].items():
        if k not in keep and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = round(float(np.median([r[k] for r in rows])), 3)
    return out


def speed(args) -> None:
    from motionrefine.core.device import pick_device
    from motionrefine.flow.inference import FlowEstimator
    from motionrefine.models.checkpoint import load_raft

    dev = pick_device("auto", args.threads)
    model, _ = load_raft(args.checkpoint, args.variant)
    est = FlowEstimator(model.to(dev), iters=args.iters, device=dev)
    print(f"# speed: {machine()}; device {dev}; RAFT-{args.variant}, {args.iters} iterations, "
          f"{args.pairs} pairs per timing, median of {args.repeat}")
    for size in args.sizes:
        h, w = map(int, size.split("x"))
        frames = _frames(args.pairs + 1, h, w)
        est.pairs(frames)  # warm-up with the timed shapes (allocator, cuDNN autotuning, first-call costs)
        rows = []
        for _ in range(args.repeat):
            with _Clock() as naive:  # every pair and direction encodes both frames again
                for t in range(args.pairs):
                    est.flow(frames[t], frames[t + 1])
                    est.flow(frames[t + 1], frames[t])
            with _Clock() as shared:  # per-frame features shared, fw+bw in one batch
                est.pairs(frames)
            n, sh = naive.wall / args.pairs, shared.wall / args.pairs
            rows.append({"size": size, "pairs": args.pairs,
                         "s_per_pair_fw_only_naive": round(n / 2, 3),
                         "s_per_pair_fw+bw_naive": round(n, 3),
                         "s_per_pair_fw+bw_shared": round(sh, 3),
                         "cpu_s_per_pair_fw+bw_shared": round(shared.cpu / args.pairs, 3),
                         "frames_per_s_fw+bw_shared": round(1.0 / sh, 3),
                         "shared_over_naive": round(sh / n, 3)})
            print(json.dumps(rows[-1]))
        print(json.dumps(_median_row(rows, {"size": size, "pairs": args.pairs, "device": str(dev)})))


def _memory_child(h: int, w: int, alt: bool, ckpt: str, variant: str, iters: int) -> None:
    from motionrefine.flow.inference import FlowEstimator
    from motionrefine.models.checkpoint import load_raft

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, _ = load_raft(ckpt, variant, alternate_corr_pixels=0 if alt else None)
    est = FlowEstimator(model, iters=iters)
    frames = _frames(2, h, w)
    t0 = time.perf_counter()
    est.flow(frames[0], frames[1])
    secs = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"size": f"{h}x{w}", "corr": "on-demand" if alt else "all-pairs",
                      "peak_rss_GiB": round(peak_kib / 2**20, 3), "seconds_per_pair": round(secs, 2)}))


def memory(args) -> None:
    print(f"# memory (peak RSS of a fresh process, one forward pair): {machine()}; RAFT-{args.variant}, {args.iters} iterations")
    for size in args.sizes:
        h, w = map(int, size.split("x"))
        for alt in (False, True):
            cmd = [sys.executable, __file__, "_memchild", str(h), str(w), str(int(alt)), str(args.checkpoint),
                   args.variant, str(args.iters)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            line = res.stdout.strip().splitlines()[-1] if res.returncode == 0 and res.stdout.strip() else None
            print(line or json.dumps({"size": size, "corr": "on-demand" if alt else "all-pairs",
                                      "error": f"exit {res.returncode}: {res.stderr.strip()[-200:]}"}))


def labels(args) -> None:
    """Label-chain overhead and scaling: decode + fw/bw inference + verification + stores,
    divided by bare inference of the same pairs (frames in memory, nothing written), and
    divided by the model time inside the chain itself (``overhead_ratio_same_run``: both
    figures under the same load, the robust one on a shared machine).

    The chain is timed exactly as the rules run it (flow_stage loads the checkpoint and
    pays its first-batch costs; make_flow_labels runs with its default 1 thread, as the
    labels rule does). Bare inference runs on the same device with the same threads after
    a warm-up. The order of chain and bare alternates between repeats to cancel drift in
    the machine's load."""
    import tempfile

    from motionrefine.core.device import pick_device
    from motionrefine.flow.inference import FlowEstimator, flow_stage
    from motionrefine.flow.labels import make_flow_labels
    from motionrefine.models.checkpoint import load_raft
    from motionrefine.core.store import open_group
    from motionrefine.io.video import extract_frames

    dev = pick_device("auto", args.threads)
    model, _ = load_raft(args.checkpoint, args.variant)
    est = FlowEstimator(model.to(dev), iters=args.iters, device=dev)
    print(f"# labels: {machine()}; device {dev}; RAFT-{args.variant}, {args.iters} iterations, batch {args.batch} "
          f"pairs, {args.video} resized {args.resize}, median of {args.repeat}")

    def chain(n: int, tmp: str) -> dict:
        fr, fl, lb = (f"{tmp}/{x}.zarr" for x in ("frames", "flow", "labels"))
        with _Clock() as dec:
            extract_frames(args.video, fr, start=0, end=n, stride=1, resize=args.resize)
        # The model calls inside flow_stage are timed too: chain / (its own inference) compares
        # two figures taken under the same load, unlike chain / (a separate bare run).
        inner = []
        orig = FlowEstimator.pairs

        def timed_pairs(self, *a, **k):
            with _Clock() as c:
                out = orig(self, *a, **k)
            inner.append(c.wall)
            return out

        FlowEstimator.pairs = timed_pairs
        try:
            with _Clock() as flo:
                flow_stage(fr, fl, args.checkpoint, args.variant, args.iters, batch_size=args.batch,
                           threads=args.threads, device=str(dev.type), progress=False)
        finally:
            FlowEstimator.pairs = orig
        with _Clock() as lab:
            make_flow_labels(fr, fl, lb, batch_size=args.batch)
        return {"decode": dec, "flow_stage": flo, "labels": lab}, sum(inner)

    def bare(frames: np.ndarray) -> _Clock:
        torch.set_num_threads(args.threads)
        n = len(frames)
        est.pairs(frames[:min(args.batch, n - 1) + 1])  # warm-up, as flow_stage's first batch was
        with _Clock() as c:
            for s in range(0, n - 1, args.batch):
                est.pairs(frames[s:min(s + args.batch, n - 1) + 1])
        return c

    for n in args.frames:
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            extract_frames(args.video, f"{tmp}/bare.zarr", start=0, end=n, stride=1, resize=args.resize)
            frames = np.asarray(open_group(f"{tmp}/bare.zarr")["frames"][...])
            for r in range(args.repeat):
                if r % 2 == 0:
                    (ch, inf_in_chain), b = chain(n, f"{tmp}/r{r}"), bare(frames)
                else:
                    b, (ch, inf_in_chain) = bare(frames), chain(n, f"{tmp}/r{r}")
                wall = sum(c.wall for c in ch.values())
                cpu = sum(c.cpu for c in ch.values())
                rows.append({"frames": n, "pairs": n - 1, "size": list(frames.shape[1:3]), "order": "chain,bare" if r % 2 == 0 else "bare,chain",
                             **{f"{k}_s": round(c.wall, 2) for k, c in ch.items()},
                             "chain_s": round(wall, 2), "bare_inference_s": round(b.wall, 2),
                             "overhead_ratio": round(wall / b.wall, 3),
                             "inference_in_chain_s": round(inf_in_chain, 2),
                             "overhead_ratio_same_run": round(wall / inf_in_chain, 3),
                             **{f"{k}_cpu_s": round(c.cpu, 2) for k, c in ch.items()},
                             "chain_cpu_s": round(cpu, 2), "bare_cpu_s": round(b.cpu, 2),
                             "overhead_ratio_cpu": round(cpu / b.cpu, 3),
                             "chain_s_per_pair": round(wall / (n - 1), 3),
                             "bare_s_per_pair": round(b.wall / (n - 1), 3)})
                print(json.dumps(rows[-1]))
        print(json.dumps(_median_row(rows, {"frames": n, "pairs": n - 1, "size": list(frames.shape[1:3])})))


def finetune_speed(args) -> None:
    """Fine-tuning steps/s at the named profiles, today's step against the current one in
    the same run, on labels made from a real video.

    ``baseline``: the step as it was before the batch was split over threads: the whole batch
    in one intra-op thread team of ``--threads`` (config ``shards=1``, the same operations
    as the loop before this change). ``current``: the default, one batch slice per thread.
    The two runs alternate (A B B A ...) ``--repeat`` times with the same seed; each run
    trains ``--steps`` timed steps after one untimed one. Printed: median s/step of each
    path, their ratio, process CPU-s per step (on a shared machine wall time includes waiting
    for the cores), the load average, and the two fixed-seed loss curves with their max
    abs difference. Also the loader's own time per batch (is data loading hidden?)."""
    import tempfile

    import pandas as pd

    from motionrefine.flow.finetune import FinetuneConfig, finetune
    from motionrefine.flow.pairs import make_loader
    from motionrefine.flow.inference import flow_stage
    from motionrefine.flow.labels import aggregate_labels, load_training_pairs, make_flow_labels
    from motionrefine.config.plan import FINETUNE_PROFILES
    from motionrefine.io.video import extract_frames

    print(f"# finetune: {machine()}; RAFT-{args.variant}, {args.video} resized {args.resize}, "
          f"{args.steps} timed steps after 1 untimed, {args.threads} threads, baseline/current alternating x{args.repeat}; "
          f"load average {os.getloadavg()[0]:.1f}")
    paths = {"baseline": {"shards": 1}, "current": {}}
    if args.one_thread_reference:
        # Today's step with a single intra-op thread: how much of the gain is the thread team's
        # stalls on a busy machine rather than work saved.
        paths["baseline_1thread"] = {"shards": 1, "threads": 1}
    with tempfile.TemporaryDirectory() as tmp:
        fr, fl, lb, ix = (f"{tmp}/{x}" for x in ("frames.zarr", "flow.zarr", "labels.zarr", "index.json"))
        extract_frames(args.video, fr, start=0, end=args.train_frames, stride=1, resize=args.resize)
        flow_stage(fr, fl, args.checkpoint, args.variant, args.iters, batch_size=4, threads=args.threads, progress=False)
        make_flow_labels(fr, fl, lb)
        aggregate_labels([lb], [fr], ix)
        for name in args.profiles:
            prof = dict(FINETUNE_PROFILES[name])
            crop = prof.pop("crop")
            base_cfg = dict(prof, steps=args.steps + 1, checkpoint_every=10**6, threads=args.threads,
                            variant=args.variant, augment={"crop": crop}, log_every=10**6)
            per_step = {k: [] for k in paths}
            cpu_per_step = {k: [] for k in paths}
            curves = {}
            crop_used = None
            for r in range(args.repeat):
                order = list(paths) if r % 2 == 0 else list(paths)[::-1]
                for path in order:
                    out = f"{tmp}/ft-{name}-{path}-{r}"
                    c0 = time.process_time()
                    s = finetune(dict(base_cfg, **paths[path]), ix, args.checkpoint, out)
                    cpu = time.process_time() - c0
                    curve = pd.read_csv(f"{out}/loss.tsv", sep="\t")
                    timed = curve["seconds"].iloc[1:]  # the first step pays start-up costs
                    per_step[path].append(float(timed.median()))
                    cpu_per_step[path].append(cpu / len(curve))
                    curves.setdefault(path, curve["loss"].to_numpy())
                    crop_used = s["crop"]
                    print(json.dumps({"profile": name, "path": path, "repeat": r, "shards": s["shards"],
                                      "s_per_step": round(per_step[path][-1], 3),
                                      "cpu_s_per_step": round(cpu_per_step[path][-1], 3),
                                      "load_avg_1min": round(os.getloadavg()[0], 2)}))
            med = {k: float(np.median(v)) for k, v in per_step.items()}
            row = {"profile": name, "batch": prof["batch_size"], "crop": crop_used, "threads": args.threads,
                   "summary": True, "repeats": args.repeat,
                   "s_per_step_baseline": round(med["baseline"], 3), "s_per_step_current": round(med["current"], 3),
                   "steps_per_s_baseline": round(1 / med["baseline"], 3),
                   "steps_per_s_current": round(1 / med["current"], 3),
                   "speedup": round(med["baseline"] / med["current"], 3),
                   "cpu_s_per_step_baseline": round(float(np.median(cpu_per_step["baseline"])), 3),
                   "cpu_s_per_step_current": round(float(np.median(cpu_per_step["current"])), 3),
                   "loss_baseline": [float(x) for x in curves["baseline"]],
                   "loss_current": [float(x) for x in curves["current"]],
                   "loss_max_abs_diff": float(np.max(np.abs(curves["baseline"] - curves["current"]))),
                   "load_avg_1min": round(os.getloadavg()[0], 2)}
            if "baseline_1thread" in med:
                row["s_per_step_baseline_1thread"] = round(med["baseline_1thread"], 3)
                row["speedup_vs_baseline_1thread"] = round(med["baseline_1thread"] / med["current"], 3)
            # The loader alone (what a step would wait for without the prefetch thread).
            fc = FinetuneConfig.from_dict(dict(prof, steps=args.steps + 1, variant=args.variant,
                                               augment={"crop": crop_used}, prefetch=0))
            times, t0 = [], time.perf_counter()
            for _ in make_loader(load_training_pairs(ix), fc, 0, args.steps + 1):
                times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
            row["loader_s_per_batch"] = round(float(np.median(times[1:] or times)), 3)
            print(json.dumps(row))


def teacher_speed(args) -> None:
    """Label-making with the default teacher against bare student inference, per frame size.

    In one run, on the same real frames (``--video`` resized to each size, ``--pairs`` pairs):
    bare student inference (fw+bw, features shared) and bare teacher inference (frames in
    memory, nothing written), both warmed up; the teacher's breakdown (view resizing, encoder,
    correlation volumes, update iterations, per view); then the two label chains the rules
    have run: teacher flow store + labels from it (two rules), and the fused job (teacher
    flow verified in memory), each divided by the bare teacher."""
    import tempfile

    from motionrefine.config import settings as mrsettings
    from motionrefine.config.schema import validate_config
    from motionrefine.core.device import pick_device
    from motionrefine.flow import teacher as tmod
    from motionrefine.flow.inference import FlowEstimator, flow_stage, load_teacher
    from motionrefine.flow.labels import make_flow_labels, make_teacher_labels
    from motionrefine.core.store import open_group
    from motionrefine.io.video import extract_frames
    from motionrefine.models.checkpoint import load_raft
    from motionrefine.models.raft import RAFT
    import yaml

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    validate_config(cfg, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    st = mrsettings.build(cfg)
    ts, verify = st.teacher.teacher(), st.labels._asdict()
    verify.pop("batch_size")
    batch = st.teacher.batch_size
    dev = pick_device("auto", args.threads)
    model, _ = load_raft(args.checkpoint, args.variant, alternate_corr_pixels=st.flow.alternate_corr_pixels)
    student = FlowEstimator(model.to(dev), iters=st.flow.iters, device=dev)
    teacher, _, _ = load_teacher(args.checkpoint, ts, args.variant, alternate_corr_pixels=st.flow.alternate_corr_pixels,
                                 device=str(dev.type), threads=args.threads)
    print(f"# teacher: {machine()}; device {dev}; student RAFT-{args.variant} {st.flow.iters} it.; teacher "
          f"{ts.as_attrs()}; batch {batch} pairs; {args.video}, {args.pairs} pairs per size; load {os.getloadavg()}")

    parts: dict[str, float] = {}

    def timed(obj, name, key):
        orig = getattr(obj, name)

        def wrapper(*a, **k):
            with _Clock() as c:
                out = orig(*a, **k)
            parts[key] = parts.get(key, 0.0) + c.wall
            return out
        setattr(obj, name, wrapper)
        return orig

    def windows(est, frames):
        for s, e in tmod.pair_windows(np.arange(len(frames) - 1), batch):
            est.pairs(frames[s:e + 1])

    for size in args.sizes:
        h, w = map(int, size.split("x"))
        n = args.pairs + 1
        with tempfile.TemporaryDirectory() as tmp:
            fr = f"{tmp}/frames.zarr"
            extract_frames(args.video, fr, start=0, end=n, stride=1, resize=f"{w}x{h}")
            frames = np.asarray(open_group(fr)["frames"][...])
            windows(student, frames[:2])  # warm-up at the timed shapes
            with _Clock() as bare_student:
                windows(student, frames)
            windows(teacher, frames[:2])
            parts.clear()
            saved = [(tmod, "to_view", timed(tmod, "to_view", "view_resize")),
                     (tmod, "from_view", timed(tmod, "from_view", "view_resize_back")),
                     (RAFT, "encode_features", timed(RAFT, "encode_features", "encoder_features")),
                     (RAFT, "encode_context", timed(RAFT, "encode_context", "encoder_context")),
                     (RAFT, "make_corr", timed(RAFT, "make_corr", "corr_volume")),
                     (FlowEstimator, "refine_pairs", timed(FlowEstimator, "refine_pairs", "refine"))]
            with _Clock() as bare_teacher:
                windows(teacher, frames)
            for obj, name, orig in saved:
                setattr(obj, name, orig)
            breakdown = {k: round(v, 2) for k, v in parts.items()}
            breakdown["update_iterations"] = round(parts["refine"] - parts["corr_volume"], 2)
            # The model calls inside each chain are timed too: chain / (its own model time)
            # compares two figures taken under the same load, robust on a shared machine.
            parts.clear()
            orig_pairs = timed(tmod.Teacher, "pairs", "teacher_in_chain")
            with _Clock() as two_flow:
                flow_stage(fr, f"{tmp}/teacher.zarr", args.checkpoint, args.variant, batch_size=batch,
                           threads=args.threads, alternate_corr_pixels=st.flow.alternate_corr_pixels,
                           device=str(dev.type), progress=False, teacher=ts)
            with _Clock() as two_labels:
                make_flow_labels(fr, f"{tmp}/teacher.zarr", f"{tmp}/labels2.zarr", **verify, batch_size=batch)
            two_inner = parts.pop("teacher_in_chain")
            with _Clock() as fused:
                make_teacher_labels(fr, f"{tmp}/labels1.zarr", args.checkpoint, ts, args.variant, batch_size=batch,
                                    alternate_corr_pixels=st.flow.alternate_corr_pixels, device=str(dev.type),
                                    threads=args.threads, **verify)
            fused_inner = parts.pop("teacher_in_chain")
            tmod.Teacher.pairs = orig_pairs
            a, b = open_group(f"{tmp}/labels1.zarr"), open_group(f"{tmp}/labels2.zarr")
            same = all(np.array_equal(np.asarray(a[k][...]), np.asarray(b[k][...]), equal_nan=True)
                       for k in ("flow", "keep", "flow_bw", "keep_bw", "kept_fraction_by_bin"))
            two = two_flow.wall + two_labels.wall
            p = args.pairs
            print(json.dumps({
                "size": size, "pairs": p, "views": teacher.views(h, w), "labelled": int(len(ts.select_pairs(p, h, w))),
                "student_s_per_pair": round(bare_student.wall / p, 2),
                "teacher_s_per_pair": round(bare_teacher.wall / p, 2),
                "teacher_over_student": round(bare_teacher.wall / bare_student.wall, 2),
                "teacher_over_student_cpu": round(bare_teacher.cpu / bare_student.cpu, 2),
                "teacher_breakdown_s": breakdown,
                "two_rule_chain_s": round(two, 2), "two_rule_flow_stage_s": round(two_flow.wall, 2),
                "two_rule_labels_s": round(two_labels.wall, 2),
                "two_rule_over_teacher": round(two / bare_teacher.wall, 3),
                "two_rule_over_its_teacher_calls": round(two / two_inner, 3),
                "two_rule_cpu_over_teacher_cpu": round((two_flow.cpu + two_labels.cpu) / bare_teacher.cpu, 3),
                "fused_chain_s": round(fused.wall, 2),
                "fused_over_teacher": round(fused.wall / bare_teacher.wall, 3),
                "fused_over_its_teacher_calls": round(fused.wall / fused_inner, 3),
                "fused_cpu_over_teacher_cpu": round(fused.cpu / bare_teacher.cpu, 3),
                "fused_outside_model_s": round(fused.wall - fused_inner, 2),
                "two_rule_outside_model_s": round(two - two_inner, 2),
                "fused_over_two_rule": round(fused.wall / two, 3),
                "fused_equals_two_rule": bool(same), "load": os.getloadavg()[0]}))


def main(argv=None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_memchild":
        h, w, alt, ckpt, variant, iters = sys.argv[2:8]
        return _memory_child(int(h), int(w), bool(int(alt)), ckpt, variant, int(iters))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["speed", "memory", "labels", "finetune", "teacher", "all"])
    p.add_argument("--checkpoint", default=str(DEFAULT_CKPT))
    p.add_argument("--variant", default="small")
    p.add_argument("--iters", type=int, default=12)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3, help="timings repeated, median reported (speed, labels, finetune)")
    p.add_argument("--sizes", nargs="+", default=None)
    p.add_argument("--video", default=str(ROOT.parent / "shared" / "data" / "frames" / "dog_run"))
    p.add_argument("--resize", default="448x256")
    p.add_argument("--frames", nargs="+", type=int, default=[16, 32])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--profiles", nargs="+", default=["demo"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--one-thread-reference", action="store_true",
                   help="finetune: also time today's step with 1 thread")
    p.add_argument("--train-frames", type=int, default=14, help="frames of --video labelled for the finetune benchmark")
    args = p.parse_args(argv)
    if args.what in ("speed", "all"):
        args.sizes = args.sizes or ["256x448", "436x1024"]
        speed(args)
    if args.what in ("memory", "all"):
        args.sizes = args.sizes if args.what == "memory" and args.sizes else ["540x960", "1080x1920"]
        memory(args)
    if args.what in ("labels", "all"):
        labels(args)
    if args.what in ("finetune", "all"):
        finetune_speed(args)
    if args.what in ("teacher", "all"):
        args.sizes = args.sizes if args.what == "teacher" and args.sizes else ["240x432", "540x960"]
        args.pairs = args.pairs if args.what == "teacher" else 2
        teacher_speed(args)


if __name__ == "__main__":
    main()
