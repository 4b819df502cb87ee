"""The tracking half on generated scenes, outside the workflow: FlowPips pseudo-labels from both
teachers on the scenes that have a teacher flow store, fine-tuning on them (no ground truth),
then the tracking comparison (chained RAFT, tracker pretrained / refined) on every scene, the
label quality per teacher, and the figures. Used where the heldout workflow run is too long for
this CPU (see weights/README.md); the library calls are the rules' own.

  .venv/bin/python tools/tracking_scenes.py --out results/tracking-scenes \\
      --scene results/benchmarks/realtex/s0.zarr:results/frames/realtex__s0.zarr:results/teacher/realtex__s0.zarr \\
      --scene results/benchmarks/realtex/s2.zarr ... [--steps 40 --lr 1e-3]

A ``--scene`` is SCENE[:FRAMES:TEACHER_FLOW]; scenes with frames and teacher flow give labels.
``--backbone``: RAFT-small weights put under the tracker for its fine-tuning and under the refined
tracker (e.g. a scene's transductive flow refinement, ``results/finetune/realtex__s0/refined.pth``);
the pretrained tracker and chained RAFT stay on ``--raft``.

The tracking defaults (label teachers, chained RAFT's occlusion β) were chosen with this tool, so it
takes dev scenes only: a scene store results/scenes/{benchmark}/{scene}.zarr has the role of
``benchmarks.<benchmark>.role`` in ``--config`` (docs/dev-test.md); a test scene needs --allow-test.
"""
import argparse
import json
import shutil
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from motionrefine.config.schema import job_log
from motionrefine.core.errors import MotionRefineError


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--scene", action="append", required=True)
    ap.add_argument("--config", default="config.yaml", help="its tracking: and model: sections are used")
    ap.add_argument("--raft", default="../shared/weights/raft-small.pth")
    ap.add_argument("--backbone", help="RAFT-small weights under the tracker being refined (default: --raft)")
    ap.add_argument("--no-guard", action="store_true",
                    help="train on every label track and keep the fine-tuned update unjudged")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--log")
    ap.add_argument("--allow-test", action="store_true", help="allow test scenes (then choose nothing on them)")
    args = ap.parse_args(argv)
    from motionrefine.config import plan

    roles = plan.benchmark_roles(yaml.safe_load(Path(args.config).read_text()))
    stores = [Path(s.split(":")[0]) for s in args.scene]
    plan.check_not_test([plan.Scene(p.parent.name, p.stem, "real-texture", str(p),
                                    role=roles.get(p.parent.name, plan.DEFAULT_ROLE)) for p in stores],
                        args.allow_test, args.config)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with job_log(args.log or str(out / "log.txt")) as log:
        from motionrefine.track.comparison import tracker_comparison
        from motionrefine.track.label_quality import label_quality
        from motionrefine.track.finetune import finetune_tracker
        from motionrefine.track.teachers import make_flowpips_labels

        cfg = yaml.safe_load(Path(args.config).read_text())
        tr = cfg["tracking"]
        labels_cfg = dict(tr.get("labels") or {})
        ft = dict(tr.get("finetune") or {}, size=tr["size"])
        if args.steps:
            ft["steps"] = args.steps
        if args.lr:
            ft["lr"] = args.lr
        if args.no_guard:
            ft["guard"] = False
        specs = [s.split(":") for s in args.scene]
        times = {}
        t0 = time.perf_counter()
        labs, frames = [], []
        for spec in specs:
            if len(spec) == 3:
                dst = out / "labels" / f"{Path(spec[1]).stem}.zarr"
                shutil.rmtree(dst, ignore_errors=True)
                make_flowpips_labels(spec[1], tr["checkpoint"], args.raft, dst, teacher_flow=spec[2], **labels_cfg)
                labs.append(str(dst))
                frames.append(spec[1])
        times["labels_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        work = out / "finetune"
        shutil.rmtree(work, ignore_errors=True)
        summary = finetune_tracker(ft, labs, frames, tr["checkpoint"], work, raft_checkpoint=args.raft,
                                   backbone=args.backbone)
        times["finetune_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        occ = tr.get("raft_occlusion") or {}
        tracker_comparison([s[0] for s in specs], {"chained RAFT (pretrained)": args.raft},
                           {"tracker (pretrained)": tr["checkpoint"], "tracker (refined)": summary["final"]},
                           size=tr["size"], iters=tr.get("iters", 3), raft_iters=cfg["model"]["iters"],
                           raft_variant=cfg["model"]["variant"], raft_fb_alpha=occ.get("alpha", 0.002),
                           raft_fb_beta=occ.get("beta", 0.1), out_table=str(out / "eval.csv"),
                           out_figure=str(out / "delta_avg.png"), out_summary=str(out / "summary.md"),
                           out_tracks_figure=str(out / "tracks.png"),
                           tracker_raft={"tracker (pretrained)": args.raft,
                                         "tracker (refined)": args.backbone or args.raft})
        times["eval_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = []
        names = dict(zip([s[0] for s in specs], plan.track_scene_names([s[0] for s in specs])))  # as the comparison's
        for spec in specs:
            if len(spec) == 3:
                rows += label_quality(spec[0], spec[2], tr["checkpoint"], args.raft, labels_cfg,
                                      scene_name=names[spec[0]])
        pd.DataFrame(rows).to_csv(out / "label_quality.csv", index=False)
        times["label_quality_s"] = time.perf_counter() - t0
        shutil.copyfile(work / "loss.tsv", out / "finetune_loss.tsv")
        (out / "times.json").write_text(json.dumps(times, indent=1))
        log.info("done: %s", times)


if __name__ == "__main__":
    try:
        main()
    except MotionRefineError as err:  # a refused test scene or a bad config: one line, no traceback
        raise SystemExit(f"error: {err}")
