"""Pre-train the small PIPs tracker on procedural synthetic sequences, and evaluate a tracker
checkpoint on held-out real-texture scenes. A command-line tool (no workflow rule runs it):
it made ``weights/pips-small-synth.pth`` (see weights/README.md).

Command line (from the project root):

  train:    .venv/bin/python tools/pretrain_tracker.py train --out-dir DIR \\
                [--steps N] [--set key=value ...] [--export weights/pips-small-synth.pth] [--log FILE]
  evaluate: .venv/bin/python tools/pretrain_tracker.py evaluate --checkpoint PTH \\
                --frames /work/shared/data/frames/dog_run [--raft RAFT.pth] [--scenes 4] [--out table.tsv]

``--set`` values are parsed as YAML (``--set height=96 --set layers=[1,3]``). Re-running
``train`` with the same DIR resumes from its latest checkpoint.
"""
import argparse
import json
import shutil
from pathlib import Path

import yaml

from motionrefine.config.schema import job_log


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for item in pairs or []:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def train(out_dir: str, config: dict, export: str | None, stop_at: int | None = None, init: str | None = None) -> dict:
    from motionrefine.track.pretrain import pretrain

    summary = pretrain(config, out_dir, stop_at=stop_at, init_checkpoint=init)
    if export and summary.get("completed"):
        dst = Path(export)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(summary["final"], dst)
        loss = Path(summary["loss_tsv"])
        shutil.copyfile(loss, dst.with_suffix(".loss.tsv"))
        summary["exported"] = str(dst)
    return summary


def evaluate(args) -> None:
    import logging

    import pandas as pd

    from motionrefine.track.eval_scenes import heldout_real_scenes
    from motionrefine.track.evaluate import evaluate_trackers, summary_table
    from motionrefine.track.trackers import pips_tracker_from_checkpoint, raft_chain_tracker, zero_motion_tracker

    log = logging.getLogger("motionrefine")
    scenes = heldout_real_scenes(args.frames, n=args.scenes, frames=args.frames_per_scene,
                                 height=args.height, width=args.width, seed=args.seed,
                                 preset_mix=args.presets)
    trackers = {"zero_motion": zero_motion_tracker()}
    for spec in args.checkpoint:
        name, _, path = spec.rpartition("=")
        trackers[name or Path(path).stem] = pips_tracker_from_checkpoint(
            path, size=args.size, iters=args.iters, raft_checkpoint=args.raft)
    if args.raft:
        trackers["raft_chain"] = raft_chain_tracker(args.raft, iters=args.raft_iters,
                                                    alpha=args.fb_alpha, beta=args.fb_beta)
    df = evaluate_trackers(scenes, trackers)
    table = summary_table(df)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        log.info("per scene:\n%s", df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        log.info("mean over scenes:\n%s", table.to_string(float_format=lambda v: f"{v:.3f}"))
    if args.out:
        df.to_csv(args.out, sep="\t", index=False, float_format="%.5g")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out-dir", required=True)
    t.add_argument("--steps", type=int)
    t.add_argument("--config", help="YAML/JSON file with PretrainConfig keys")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--export", help="copy final.pth here (and the loss curve beside it as .loss.tsv)")
    t.add_argument("--stop-at", type=int, help="end this call after that many total steps (resumable)")
    t.add_argument("--init", help="start from this tracker checkpoint (e.g. an earlier phase)")
    t.add_argument("--log")
    e = sub.add_parser("evaluate")
    e.add_argument("--checkpoint", action="append", default=[], metavar="[NAME=]PATH")
    e.add_argument("--size", default="small")
    e.add_argument("--iters", type=int, default=6)
    e.add_argument("--frames", required=True,
                   help="folder of real frames used as scene textures, or 'procedural' for procedural textures")
    e.add_argument("--raft", help="RAFT-small checkpoint: adds a chained-RAFT baseline; a flow-small tracker runs on it")
    e.add_argument("--raft-iters", type=int, default=12)
    e.add_argument("--fb-alpha", type=float, default=0.002, help="chained RAFT occlusion check (chain_flow_tracks)")
    e.add_argument("--fb-beta", type=float, default=0.1)
    e.add_argument("--scenes", type=int, default=4)
    e.add_argument("--frames-per-scene", type=int, default=24)
    e.add_argument("--height", type=int, default=128)
    e.add_argument("--width", type=int, default=160)
    e.add_argument("--presets", default="easy,nonrigid_mild")
    e.add_argument("--seed", type=int, default=100)
    e.add_argument("--out")
    e.add_argument("--log")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    with job_log(args.log):
        if args.cmd == "train":
            cfg = {}
            if args.config:
                cfg.update(yaml.safe_load(Path(args.config).read_text()) or {})
            cfg.update(_overrides(args.set))
            if args.steps is not None:
                cfg["steps"] = args.steps
            summary = train(args.out_dir, cfg, args.export, args.stop_at, args.init)
            print(json.dumps(summary, indent=1, default=str))
        else:
            evaluate(args)


if __name__ == "__main__":
    main()
