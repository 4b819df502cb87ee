"""Refinement gain against fine-tuning CPU time, for a few budgets (docs/budget.md).

Reuses a finished default run's training sets (results/train/{run}.json, the teacher's verified
labels) and re-runs only the fine-tune of each transductive run at each budget, then evaluates
the fine-tuned (unguarded) weights on the run's own scene. Ground truth only measures here. It
chooses a default, so it sweeps dev scenes only (`benchmarks.<name>.role`, docs/dev-test.md):
every dev scene's run by default; a test scene's run only with --allow-test.

    PYTHONPATH=workflow .venv/bin/python tools/budget_sweep.py --results results \
        --budget steps=50,batch=2,crop=128x224 --budget steps=100,batch=2,crop=128x224 ...

A budget may also set ``lr`` (the learning-rate schedule's peak), ``focus`` and ``focus_crops``
(``flow.focus``). A dev scene the default run does not refine (``transductive: false``) is swept
on a training set indexed from its labels.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from motionrefine.bench.scenes import load_flow_scene
from motionrefine.core.errors import MotionRefineError
from motionrefine.config import plan
from motionrefine.config import schema
from motionrefine.flow.evaluate import evaluate_flow
from motionrefine.flow.finetune import finetune
from motionrefine.flow.trainset import aggregate_labels

ROOT = Path(__file__).resolve().parents[1]


def parse_budget(text: str) -> dict:
    """'steps=100,batch=2,crop=128x224,lr=2e-4' -> fine-tuning keys (lr: the schedule's peak)."""
    out = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key == "crop":
            out["crop"] = [int(v) for v in value.split("x")]
        elif key in ("steps", "batch"):
            out["steps" if key == "steps" else "batch_size"] = int(value)
        elif key in ("lr", "focus"):
            out[key] = float(value)
        elif key == "focus_crops":
            out[key] = value.lower() in ("1", "true", "yes")
        else:
            raise SystemExit(f"budget {text!r}: unknown key {key!r} (steps, batch, crop, lr, focus, focus_crops)")
    return out


def training_set(results: Path, run: str, work: Path) -> str:
    """The run's training set: results/train/{run}.json, or, for a scene the default run labels
    but does not refine (a dev scene with ``transductive: false``), one indexed from its label
    and frames stores as rule aggregate would (into ``work``)."""
    train = results / "train" / f"{run}.json"
    if train.is_file():
        return str(train)
    labels, frames = results / "labels" / "flow" / f"{run}.zarr", results / "frames" / f"{run}.zarr"
    if not (labels.is_dir() and frames.is_dir()):
        raise SystemExit(f"{run}: neither {train} nor its labels and frames stores under {results}")
    out = work / f"{run}.json"
    aggregate_labels([str(labels)], [str(frames)], str(out))
    return str(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--results", default="results", help="a finished run's results folder (its train/ sets)")
    ap.add_argument("--budget", action="append", required=True, help="steps=N,batch=B,crop=HxW (repeatable)")
    ap.add_argument("--seeds", type=int, default=1, help="fine-tuning seeds per budget (seed, seed+1, ...)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", nargs="*", default=None, help="transductive runs to sweep (default: every dev scene's)")
    ap.add_argument("--allow-test", action="store_true", help="allow test scenes' runs (then choose nothing on them)")
    ap.add_argument("--out", default="budget_sweep.csv")
    args = ap.parse_args(argv)

    with open(args.config) as fh:
        config = yaml.safe_load(fh)
    schema.validate_config(config, ROOT / "workflow/schemas/config.schema.yaml")
    asset_root = schema.asset_root(config, ROOT)
    checkpoint = str(schema.model_checkpoint(config, ROOT))
    scenes = {s.video: s for s in plan.flow_scenes(config, asset_root)}
    unknown = [r for r in args.runs or [] if r not in scenes]
    if unknown:
        raise SystemExit(f"--runs {' '.join(unknown)}: not transductive runs of {args.config} ({', '.join(scenes)})")
    runs = args.runs or [v for v, s in scenes.items() if s.role == "dev"]
    plan.check_not_test([scenes[r] for r in runs], args.allow_test, args.config)
    torch.set_num_threads(args.threads)
    base = plan.finetune_settings(config)
    ev = {"variant": config["model"]["variant"], "iters": config["model"]["iters"]}
    rows = []
    sets = Path(tempfile.mkdtemp(prefix="budget_sets_"))  # indexed training sets of unrefined dev scenes
    trains = {run: training_set(Path(args.results), run, sets) for run in runs}
    for spec in args.budget:
        budget = parse_budget(spec)
        for run in runs:
            s = scenes[run]
            # Generated scenes live under the run's folder (the parent of its results/).
            source = Path(s.source) if Path(s.source).is_absolute() else Path(args.results).parent / s.source
            scene = load_flow_scene(s.kind, s.name, str(source), s.benchmark, s.reader_options)
            train = trains[run]
            for k in range(args.seeds):
                settings = {**base, **{k2: v for k2, v in budget.items() if k2 != "crop"}, "seed": base["seed"] + k,
                            "threads": args.threads}
                if "crop" in budget:
                    settings["augment"] = {**settings["augment"], "crop": budget["crop"]}
                with tempfile.TemporaryDirectory() as work:
                    cpu0, wall0 = time.process_time(), time.perf_counter()
                    summary = finetune(settings, str(train), checkpoint, work)
                    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                    df = evaluate_flow({"pretrained": checkpoint, "trained": summary["final"]}, [scene], **ev,
                                       threads=args.threads, benchmark=s.benchmark)
                epe = df.set_index("model")["epe"]
                rows.append({"budget": spec, "run": run, "seed": settings["seed"], "cpu_min": cpu / 60,
                             "wall_min": wall / 60, "epe_pretrained": epe["pretrained"], "epe_trained": epe["trained"],
                             "change_pct": 100 * (epe["trained"] / epe["pretrained"] - 1)})
                print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    shutil.rmtree(sets, ignore_errors=True)
    out = pd.DataFrame(rows)
    out.to_csv(args.out, index=False)
    summary = out.groupby("budget", sort=False).agg(cpu_min=("cpu_min", "mean"), wall_min=("wall_min", "mean"),
                                                    mean_change_pct=("change_pct", "mean"),
                                                    worst_change_pct=("change_pct", "max"))
    print("\nper budget (mean over runs and seeds; minutes per fine-tune):")
    print(summary.to_string(float_format=lambda x: f"{x:.2f}"))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; rows in {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MotionRefineError as err:  # a refused test scene or a bad config: one line, no traceback
        raise SystemExit(f"error: {err}")
