"""Teacher settings and verification thresholds against ground truth, on scenes that have it.

For each scene: the student's EPE, the teacher's EPE, and for a grid of verification
thresholds the kept fraction, the kept labels' EPE and the student's EPE on the same pixels
(the information a label adds). Ground truth only measures here; nothing trains on it.

    .venv/bin/python tools/label_sweep.py results/scenes/realtex/s0.zarr ... [--middlebury ../shared/data/stereo/motorcycle]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import pandas as pd
import torch

from motionrefine.bench.scenes import load_flow_scene
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


def epe(a, b):
    return np.linalg.norm(a - b, axis=-1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("realtex", nargs="*")
    ap.add_argument("--middlebury", default=None)
    ap.add_argument("--checkpoint", default="../shared/weights/raft-small.pth")
    ap.add_argument("--out", default="label_sweep.csv")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    scenes = [load_flow_scene("real-texture", p.rstrip("/").split("/")[-1][:-5], p, "realtex") for p in args.realtex]
    if args.middlebury:
        scenes.append(load_flow_scene("middlebury-stereo", "motorcycle", args.middlebury, "middlebury"))
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
                    "scene": scene.name, "teacher": name, "alpha": a, "beta": be, "colour": c,
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
    main()
