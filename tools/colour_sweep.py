"""The colour check, raw against gradient-normalised, on a finished run's teacher flow (docs/labels.md).

For each benchmark scene with ground truth: the teacher's stored forward/backward flow
(results/teacher/{video}.zarr) verified with the default forward-backward test and each colour
check; kept share, kept labels' EPE and the student's EPE on the same pixels, overall and split
into flat and textured pixels (image gradient below / above the scene's median). Ground truth
only measures; nothing trains on it. It chooses a default, so it reads the config's dev scenes
(`benchmarks.<name>.role`, docs/dev-test.md); test scenes only with --role test/all --allow-test.

    PYTHONPATH=workflow .venv/bin/python tools/colour_sweep.py --results results
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from motionrefine.bench.scenes import load_flow_scene
from motionrefine.core.errors import MotionRefineError
from motionrefine.config import plan, schema
from motionrefine.core.store import open_group
from motionrefine.flow.cycle import image_gradient, verify_flow
from motionrefine.flow.inference import FlowEstimator
from motionrefine.flow.teacher import Teacher, TeacherSettings
from motionrefine.models.checkpoint import load_raft

ROOT = Path(__file__).resolve().parents[1]
CHECKS = [("off", None), ("raw", 0.005), ("raw", 0.02), ("raw", 0.05),
          ("gradient", 0.25), ("gradient", 0.5), ("gradient", 1.0), ("gradient", 2.0)]


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--results", default="results")
    ap.add_argument("--out", default="colour_sweep.csv")
    ap.add_argument("--role", default="dev", choices=["dev", "test", "all"], help="which of the config's scenes")
    ap.add_argument("--allow-test", action="store_true", help="measure on test scenes too (then choose nothing on them)")
    args = ap.parse_args(argv)
    with open(args.config) as fh:
        config = yaml.safe_load(fh)
    schema.validate_config(config, ROOT / "workflow/schemas/config.schema.yaml")
    scenes = plan.select_role(plan.flow_scenes(config, schema.asset_root(config, ROOT)), args.role, args.allow_test,
                              args.config)
    verify = config["verify"]
    torch.set_num_threads(2)
    model, _ = load_raft(str(schema.model_checkpoint(config, ROOT)), config["model"]["variant"])
    student = Teacher(FlowEstimator(model, config["model"]["iters"]), TeacherSettings(scales=(1.0,), iters=12, flip=False))
    results = Path(args.results)
    rows = []
    for s in scenes:
        source = Path(s.source) if Path(s.source).is_absolute() else results.parent / s.source
        scene = load_flow_scene(s.kind, s.name, str(source), s.benchmark, s.reader_options)
        path = results / "teacher" / f"{s.video}.zarr"
        if not path.is_dir():
            print(f"{s.video}: no teacher store at {path}, skipped", flush=True)
            continue
        store = open_group(path)
        fw, bw = np.asarray(store["flow_fw"]), np.asarray(store["flow_bw"])
        frames = np.asarray(scene.frames)
        gt, valid = np.asarray(scene.flow), np.asarray(scene.valid).astype(bool)
        stu_err = np.linalg.norm(student.pairs(frames)[0] - gt, axis=-1)
        err = np.linalg.norm(fw - gt, axis=-1)
        i1 = torch.from_numpy(frames[:-1]).permute(0, 3, 1, 2).float()
        i2 = torch.from_numpy(frames[1:]).permute(0, 3, 1, 2).float()
        grad = image_gradient(i1 / 255.0 - 0.5).numpy()
        textured = grad > np.median(grad)
        f = torch.from_numpy(fw).permute(0, 3, 1, 2)
        b = torch.from_numpy(bw).permute(0, 3, 1, 2)
        for norm, c in CHECKS:
            res = verify_flow(f, b, i1, i2, verify["alpha"], verify["beta"], c or 1.0, verify["max_flow"],
                              "fb" if c is None else "fb+colour", "raw" if c is None else norm)
            keep = res.keep.numpy() & valid
            row = {"scene": s.video, "colour_norm": norm, "colour": c}
            for part, mask in (("all", valid), ("flat", valid & ~textured), ("textured", valid & textured)):
                k = keep & mask
                row[f"kept_{part}"] = k.sum() / max(mask.sum(), 1)
                row[f"label_epe_{part}"] = float(err[k].mean()) if k.any() else np.nan
                row[f"student_epe_{part}"] = float(stu_err[k].mean()) if k.any() else np.nan
            rows.append(row)
        print(s.video, "done", flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(args.out, index=False)
    pd.set_option("display.width", 250)
    print(df.round(3).to_string(index=False))
    return df


if __name__ == "__main__":
    try:
        main()
    except MotionRefineError as err:  # a refused test scene or a bad config: one line, no traceback
        raise SystemExit(f"error: {err}")
