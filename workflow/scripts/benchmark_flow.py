#!/usr/bin/env python
"""Flow-stage benchmarks (figures, not tests): speed, feature reuse, memory of both correlation paths.

    python workflow/scripts/benchmark_flow.py speed   [--sizes 256x448 436x1024] [--pairs 4]
    python workflow/scripts/benchmark_flow.py memory  [--sizes 540x960 1080x1920]
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


def main(argv=None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_memchild":
        h, w, alt, ckpt, variant, iters = sys.argv[2:8]
        return _memory_child(int(h), int(w), bool(int(alt)), ckpt, variant, int(iters))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["speed", "memory", "all"])
    p.add_argument("--checkpoint", default=str(DEFAULT_CKPT))
    p.add_argument("--variant", default="small")
    p.add_argument("--iters", type=int, default=12)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--sizes", nargs="+", default=None)
    args = p.parse_args(argv)
    if args.what in ("speed", "all"):
        args.sizes = args.sizes or ["256x448", "436x1024"]
        speed(args)
    if args.what in ("memory", "all"):
        args.sizes = args.sizes if args.what == "memory" and args.sizes else ["540x960", "1080x1920"]
        memory(args)


if __name__ == "__main__":
    main()
