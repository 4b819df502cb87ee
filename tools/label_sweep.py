"""Teacher settings and verification thresholds against ground truth, on scenes that have it.

For each scene: the student's EPE, the teacher's EPE, and for a grid of verification
thresholds the kept fraction, the kept labels' EPE and the student's EPE on the same pixels
(the information a label adds). Ground truth only measures here; nothing trains on it. It chooses
defaults, so it reads dev scenes only (`benchmarks.<name>.role`, docs/dev-test.md): by default
every dev scene of the config; a test scene only with --allow-test.

    PYTHONPATH=workflow .venv/bin/python tools/label_sweep.py --results results     # the config's dev scenes
    PYTHONPATH=workflow .venv/bin/python tools/label_sweep.py results/scenes/realtex/s0.zarr ... \
        [--middlebury ../shared/data/stereo/motorcycle --allow-test]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from motionrefine.bench.scenes import load_flow_scene
from motionrefine.core.errors import MotionRefineError
from motionrefine.config import plan, schema
from motionrefine.flow.cycle import verify_flow
from motionrefine.flow.inference import FlowEstimator
from motionrefine.flow.teacher import Teacher, TeacherSettings
from motionrefine.models.checkpoint import load_raft

TEACHERS = {
    "student": TeacherSettings(scales=(1.0,), iters=12, flip=False),
    "x2-i32-flip": TeacherSettings(scales=(2.0,), iters=32, flip=True),
    "x2-i24": TeacherSettings(scales=(2.0,), iters=24, flip=False),
}
GRID = {"alpha": [0.002, 0.01, 0.05], "beta": [0.1, 0.5, 1.0], "colour": [0.005, 0.02, None]}
ROOT = Path(__file__).resolve().parents[1]


def sweep_scenes(args) -> list[plan.Scene]:
    """The scenes to sweep, each with its role from the config: the stores and Middlebury root
    given, or the config's scenes of ``--role``; test scenes refused without ``--allow-test``."""
    config = schema.load_config_file(args.config, ROOT / "workflow/schemas/config.schema.yaml")
    roles = plan.benchmark_roles(config)
    if not args.realtex and not args.middlebury:
        results = Path(args.results)
        scenes = plan.select_role(plan.flow_scenes(config, schema.asset_root(config, ROOT)), args.role,
                                  args.allow_test, args.config)
        # Generated scenes' stores lie under the run's folder (the parent of its results/).
        return [s._replace(source=s.source if Path(s.source).is_absolute() else str(results.parent / s.source))
                for s in scenes]
    # A store results/scenes/{benchmark}/{scene}.zarr has its benchmark's role; Middlebury is "middlebury"'s.
    scenes = [plan.Scene(Path(p).parent.name, Path(p.rstrip("/")).stem, "real-texture", p,
                         role=roles.get(Path(p).parent.name, plan.DEFAULT_ROLE)) for p in args.realtex]
    if args.middlebury:
        scenes.append(plan.Scene("middlebury", "motorcycle", "middlebury-stereo", args.middlebury,
                                 role=roles.get("middlebury", plan.DEFAULT_ROLE)))
    plan.check_not_test(scenes, args.allow_test, args.config)
    return scenes


def epe(a, b):
    return np.linalg.norm(a - b, axis=-1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("realtex", nargs="*", help="scene stores results/scenes/{benchmark}/{scene}.zarr")
    ap.add_argument("--middlebury", default=None, help="Middlebury Motorcycle's root (benchmark 'middlebury')")
    ap.add_argument("--config", default=str(ROOT / "config.yaml"), help="where the benchmarks' roles are read")
    ap.add_argument("--results", default="results", help="a run's results/ (no stores given: its scene stores)")
    ap.add_argument("--role", default="dev", choices=["dev", "test", "all"], help="no stores given: which scenes")
    ap.add_argument("--allow-test", action="store_true", help="measure on test scenes too (then choose nothing on them)")
    ap.add_argument("--checkpoint", default="../shared/weights/raft-small.pth")
    ap.add_argument("--out", default="label_sweep.csv")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    picked = sweep_scenes(args)
    print("sweeping", ", ".join(f"{s.benchmark}/{s.name} ({s.role})" for s in picked), flush=True)
    scenes = [load_flow_scene(s.kind, s.name, s.source, s.benchmark, s.reader_options) for s in picked]
    model, _ = load_raft(args.checkpoint, "small")
    rows = []
    for scene in scenes:
        frames = np.asarray(scene.frames)
        gt, valid = np.asarray(scene.flow), np.asarray(scene.valid).astype(bool)
        flows = {}
        for name, ts in TEACHERS.items():
            t0 = time.perf_counter()
            flows[name] = Teacher(FlowEstimator(model, ts.iters), ts).pairs(frames)
            flows[name + "_s"] = time.perf_counter() - t0
        stu = flows["student"][0]
        stu_err = epe(stu, gt)
        for name in TEACHERS:
            fw, bw = flows[name]
            err = epe(fw, gt)
            i1 = torch.from_numpy(frames[:-1]).permute(0, 3, 1, 2)
            i2 = torch.from_numpy(frames[1:]).permute(0, 3, 1, 2)
            f = torch.from_numpy(fw).permute(0, 3, 1, 2)
            b = torch.from_numpy(bw).permute(0, 3, 1, 2)
            for a, be, c in itertools.product(*GRID.values()):
                res = verify_flow(f, b, i1, i2, a, be, c if c is not None else 1.0, 400.0,
                                  "fb+colour" if c is not None else "fb")
                keep = res.keep.numpy() & valid
                n = int(keep.sum())
                rows.append({
                    "benchmark": scene.meta.get("benchmark", ""), "scene": scene.name, "teacher": name, "alpha": a, "beta": be, "colour": c,
                    "teacher_epe": float(err[valid].mean()), "student_epe": float(stu_err[valid].mean()),
                    "seconds_vs_student": flows[name + "_s"] / flows["student_s"],
                    "kept": n / valid.sum(), "label_epe": float(err[keep].mean()) if n else np.nan,
                    "student_epe_on_kept": float(stu_err[keep].mean()) if n else np.nan,
                })
        print(scene.name, {k: round(float(epe(flows[k][0], gt)[valid].mean()), 3) for k in TEACHERS}, flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(args.out, index=False)
    pd.set_option("display.width", 200)
    print(df[df.alpha.eq(0.002) & df.beta.eq(0.1)].round(3).to_string(index=False))
    return df


if __name__ == "__main__":
    try:
        main()
    except MotionRefineError as err:  # a refused test scene or a bad config: one line, no traceback
        raise SystemExit(f"error: {err}")
