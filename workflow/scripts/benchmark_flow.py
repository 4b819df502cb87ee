#!/usr/bin/env python
"""Flow-stage benchmarks (figures, not tests): speed, feature reuse, memory of both correlation paths.

    python workflow/scripts/benchmark_flow.py speed   [--sizes 256x448 436x1024] [--pairs 4]
    python workflow/scripts/benchmark_flow.py memory  [--sizes 540x960 1080x1920]
    python workflow/scripts/benchmark_flow.py labels  [--video PATH] [--frames 16 32] [--resize 448x256]
    python workflow/scripts/benchmark_flow.py finetune [--profiles demo paper] [--steps 3]
    python workflow/scripts/benchmark_flow.py all

Every figure is printed with the machine, torch threads and settings. Memory is the peak
RSS of a fresh child process per measurement (ru_maxrss), so runs don't inherit peaks.
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

ROOT = Path(__file__).resolve().parents[2]
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
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def speed(args) -> None:
    from motionrefine.device import pick_device
    from motionrefine.inference import FlowEstimator
    from motionrefine.models.checkpoint import load_raft

    dev = pick_device("auto", args.threads)
    model, _ = load_raft(args.checkpoint, args.variant)
    est = FlowEstimator(model.to(dev), iters=args.iters, device=dev)
    print(f"# speed: {machine()}; RAFT-{args.variant}, {args.iters} iterations")
    for size in args.sizes:
        h, w = map(int, size.split("x"))
        frames = _frames(args.pairs + 1, h, w)
        est.pairs(frames[:2])  # warm-up
        _sync()
        t0 = time.perf_counter()
        for t in range(args.pairs):  # naive: every pair and direction encodes both frames again
            est.flow(frames[t], frames[t + 1])
            est.flow(frames[t + 1], frames[t])
        _sync()
        naive = (time.perf_counter() - t0) / args.pairs
        t0 = time.perf_counter()
        est.pairs(frames)  # shared features, one batch
        _sync()
        shared = (time.perf_counter() - t0) / args.pairs
        print(json.dumps({"size": size, "pairs": args.pairs,
                          "s_per_pair_fw_only_naive": round(naive / 2, 3),
                          "s_per_pair_fw+bw_naive": round(naive, 3),
                          "s_per_pair_fw+bw_shared": round(shared, 3),
                          "frames_per_s_fw+bw_shared": round(1.0 / shared, 2),
                          "shared_over_naive": round(shared / naive, 3)}))


def _memory_child(h: int, w: int, alt: bool, ckpt: str, variant: str, iters: int) -> None:
    from motionrefine.inference import FlowEstimator
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
    divided by bare inference of the same pairs (frames in memory, nothing written)."""
    import tempfile

    from motionrefine.inference import FlowEstimator, flow_stage
    from motionrefine.labels import make_flow_labels
    from motionrefine.models.checkpoint import load_raft
    from motionrefine.store import open_group
    from motionrefine.video import extract_frames

    torch.set_num_threads(args.threads)
    model, _ = load_raft(args.checkpoint, args.variant)
    est = FlowEstimator(model, iters=args.iters)
    print(f"# labels: {machine()}; RAFT-{args.variant}, {args.iters} iterations, {args.video} resized {args.resize}")
    for n in args.frames:
        with tempfile.TemporaryDirectory() as tmp:
            fr, fl, lb = (f"{tmp}/{x}.zarr" for x in ("frames", "flow", "labels"))
            t0 = time.perf_counter()
            extract_frames(args.video, fr, start=0, end=n, stride=1, resize=args.resize)
            t1 = time.perf_counter()
            flow_stage(fr, fl, args.checkpoint, args.variant, args.iters, batch_size=args.batch,
                       threads=args.threads, progress=False)
            t2 = time.perf_counter()
            make_flow_labels(fr, fl, lb, batch_size=args.batch)
            t3 = time.perf_counter()
            frames = np.asarray(open_group(fr)["frames"][...])
            est.pairs(frames[:2])  # warm-up, as flow_stage's first batch was
            t4 = time.perf_counter()
            for s in range(0, n - 1, args.batch):
                est.pairs(frames[s:min(s + args.batch, n - 1) + 1])
            bare = time.perf_counter() - t4
        chain = t3 - t0
        print(json.dumps({"frames": n, "pairs": n - 1, "size": list(frames.shape[1:3]),
                          "decode_s": round(t1 - t0, 2), "flow_stage_s": round(t2 - t1, 2),
                          "labels_s": round(t3 - t2, 2), "chain_s": round(chain, 2),
                          "bare_inference_s": round(bare, 2), "overhead_ratio": round(chain / bare, 3),
                          "chain_s_per_pair": round(chain / (n - 1), 3)}))


def finetune_speed(args) -> None:
    """Fine-tuning steps/s at the named profiles, on labels made from a real video."""
    import tempfile

    from motionrefine.finetune import finetune
    from motionrefine.inference import flow_stage
    from motionrefine.labels import aggregate_labels, make_flow_labels
    from motionrefine.plan import FINETUNE_PROFILES
    from motionrefine.video import extract_frames

    print(f"# finetune: {machine()}; RAFT-{args.variant}, {args.video} resized {args.resize}, {args.steps} timed steps")
    with tempfile.TemporaryDirectory() as tmp:
        fr, fl, lb, ix = (f"{tmp}/{x}" for x in ("frames.zarr", "flow.zarr", "labels.zarr", "index.json"))
        extract_frames(args.video, fr, start=0, end=14, stride=1, resize=args.resize)
        flow_stage(fr, fl, args.checkpoint, args.variant, args.iters, batch_size=4, threads=args.threads, progress=False)
        make_flow_labels(fr, fl, lb)
        aggregate_labels([lb], [fr], ix)
        for name in args.profiles:
            prof = dict(FINETUNE_PROFILES[name])
            crop = prof.pop("crop")
            cfg = dict(prof, steps=args.steps + 1, checkpoint_every=10**6, threads=args.threads,
                       variant=args.variant, augment={"crop": crop})
            s = finetune(cfg, ix, args.checkpoint, f"{tmp}/ft-{name}")
            import pandas as pd

            curve = pd.read_csv(f"{tmp}/ft-{name}/loss.tsv", sep="\t")
            per_step = curve["seconds"].iloc[1:].mean()  # the first step pays start-up costs
            print(json.dumps({"profile": name, "batch": prof["batch_size"], "crop": s["crop"],
                              "s_per_step": round(float(per_step), 2), "steps_per_s": round(1 / float(per_step), 3)}))


def main(argv=None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_memchild":
        h, w, alt, ckpt, variant, iters = sys.argv[2:8]
        return _memory_child(int(h), int(w), bool(int(alt)), ckpt, variant, int(iters))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["speed", "memory", "labels", "finetune", "all"])
    p.add_argument("--checkpoint", default=str(DEFAULT_CKPT))
    p.add_argument("--variant", default="small")
    p.add_argument("--iters", type=int, default=12)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--sizes", nargs="+", default=None)
    p.add_argument("--video", default=str(ROOT.parent / "shared" / "data" / "frames" / "dog_run"))
    p.add_argument("--resize", default="448x256")
    p.add_argument("--frames", nargs="+", type=int, default=[16, 32])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--profiles", nargs="+", default=["demo", "paper"])
    p.add_argument("--steps", type=int, default=3)
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


if __name__ == "__main__":
    main()
