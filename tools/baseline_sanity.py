"""Are the self-supervised baselines working losses? Fine-tune with each one on a generated
real-texture scene (its own frames, no labels) from a deliberately weak start, the published
RAFT-small with its flow head re-initialised (``--reinit update_block``: the whole update
block), and from the supervised weights themselves;
print the scene's EPE against its exact ground truth before and after.

A working loss lowers EPE from the weak start; from the supervised weights it may raise it
(the paper's claim). Ground truth is read only to score, never to train.

    PYTHONPATH=$PWD/workflow OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python tools/baseline_sanity.py \
        | tee docs/baseline_sanity.log
    ... --preset nonrigid_hard | tee docs/baseline_sanity_hard.log
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from motionrefine.bench import synth
from motionrefine.flow.finetune import FinetuneConfig, compute_loss, make_scheduler
from motionrefine.models.checkpoint import load_raft

ROOT = Path(__file__).resolve().parents[1]


def make_scene(shared: Path, height: int, width: int, frames: int, seed: int, preset: str = "easy"):
    """A layered scene textured with two real frames of the dog_run clip (exact flow)."""
    files = sorted((shared / "data/frames/dog_run").glob("*.jpg"))
    sources = []
    for f in (files[0], files[len(files) // 2]):
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        img = cv2.resize(img, (2 * width, 2 * height), interpolation=cv2.INTER_AREA)[..., ::-1]
        sources.append(np.ascontiguousarray(img))
    cfg = synth.make_config(preset, height=height, width=width, frames=frames, n_tracks=8, seed=seed)
    return synth.render_sequence(sources, cfg)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames.astype(np.float32)).permute(0, 3, 1, 2)


@torch.no_grad()
def scene_epe(model, seq) -> float:
    """Mean end-point error over every pixel of every forward pair."""
    model.eval()
    imgs = to_tensor(seq.frames)
    _, flow = model(imgs[:-1], imgs[1:], iters=12, test_mode=True)
    gt = torch.from_numpy(seq.flow_fw).permute(0, 3, 1, 2)
    model.train()
    return float((flow - gt).norm(dim=1).mean())


def weak_start(path: Path, seed: int, part: str = "flow_head"):
    """The published weights with part of the update block re-initialised (PyTorch's default
    init, seeded): ``flow_head`` (the two convolutions that turn the GRU state into a flow
    update) or ``update_block`` (also the GRU and the motion encoder). Features and context
    are kept; the refinement must be relearnt."""
    model, _ = load_raft(path, "small")
    torch.manual_seed(seed)
    block = model.update_block if part == "update_block" else model.update_block.flow_head
    for m in block.modules():
        if m is not block and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model


def finetune_on_scene(model, seq, cfg: FinetuneConfig, seed: int) -> list[float]:
    """``cfg.steps`` steps of the baseline loss on random (pair, batch) draws of the scene's frames."""
    imgs = to_tensor(seq.frames)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
    sched = make_scheduler(opt, cfg)
    rng = np.random.default_rng(seed)
    losses = []
    for s in range(cfg.steps):
        idx = rng.choice(len(imgs) - 1, cfg.batch_size, replace=False)
        i1, i2 = imgs[idx], imgs[idx + 1]
        b, _, h, w = i1.shape
        # No labels: the metrics' label is empty, so nothing of the ground truth enters.
        batch = {"img1": i1, "img2": i2, "raw1": i1, "raw2": i2, "flow": torch.zeros(b, 2, h, w),
                 "valid": torch.zeros(b, h, w, dtype=torch.bool)}
        loss, _ = compute_loss(model, batch, cfg, s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-4, help="weak start (the supervised start uses --lr-supervised)")
    ap.add_argument("--lr-supervised", type=float, default=1e-4)
    ap.add_argument("--size", type=int, nargs=2, default=(64, 96))
    ap.add_argument("--iters", type=int, default=8, help="refinement iterations in training (evaluation: 12)")
    ap.add_argument("--occlusion-after", type=float, default=0.5,
                    help="weak start: fraction of the steps before the occlusion mask is applied")
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="easy", help="scene preset of bench.synth (easy, nonrigid_mild, nonrigid_hard)")
    ap.add_argument("--modes", nargs="+", default=["photometric", "cycle"])
    ap.add_argument("--reinit", choices=["flow_head", "update_block"], default="flow_head",
                    help="what the weak start re-initialises")
    ap.add_argument("--starts", nargs="+", default=["weak", "supervised"])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    weights = args.shared / "weights/raft-small.pth"
    seq = make_scene(args.shared, *args.size, args.frames, args.seed, args.preset)
    zero = float(np.linalg.norm(seq.flow_fw, axis=-1).mean())
    print(f"weak start: {args.reinit} re-initialised; occlusion mask after {args.occlusion_after:.0%} of the steps; "
          f"training {args.iters} iterations, batch {args.batch}")
    print(f"scene: {args.preset} preset, {args.size[0]}x{args.size[1]}, {args.frames} frames, seed {args.seed}; "
          f"zero-flow EPE {zero:.3f} px")
    print(f"{'start':<11} {'mode':<12} {'steps':>5} {'lr':>7} {'EPE before':>10} {'EPE after':>9} "
          f"{'change %':>8} {'loss first→last(10-step means)':>32} {'s/step':>6}")
    for start in args.starts:
        for mode in args.modes:
            model = weak_start(weights, args.seed, args.reinit) if start == "weak" else load_raft(weights, "small")[0]
            model.train()
            lr = args.lr if start == "weak" else args.lr_supervised
            occ = int(args.occlusion_after * args.steps) if start == "weak" else 0
            cfg = FinetuneConfig(mode=mode, steps=args.steps, batch_size=args.batch, lr=lr, seed=args.seed,
                                 iters=args.iters, occlusion_after=occ)
            before = scene_epe(model, seq)
            t0 = time.perf_counter()
            losses = finetune_on_scene(model, seq, cfg, args.seed)
            sec = (time.perf_counter() - t0) / args.steps
            after = scene_epe(model, seq)
            k = min(10, len(losses))
            print(f"{start:<11} {mode:<12} {args.steps:>5} {lr:>7.0e} {before:>10.3f} {after:>9.3f} "
                  f"{100 * (after - before) / before:>+8.1f} {np.mean(losses[:k]):>15.4f} → {np.mean(losses[-k:]):<14.4f}"
                  f" {sec:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
