"""Real-texture scenes with exact tracks, written as a TAP-Vid DAVIS-layout pickle: a held-out
check of the tracking half on footage the workflow never refines on (the sample videos are not
used), read by the workflow exactly as a user's TAP-Vid file.

    .venv/bin/python tools/tapvid_scenes.py --frames ../shared/data/frames/hallway \\
        --out results/heldout-tapvid/hallway.pkl --scenes 2 --frames-per-scene 24

then list it under ``benchmarks`` (an absolute ``path`` is taken as it is):

    benchmarks:
      hall: {kind: tapvid, path: /abs/path/results/heldout-tapvid/hallway.pkl, scenes: [hallway0, hallway1]}

With ``refine.transductive`` on, each video gets a flow run of its own, and
``results/tracking/summary.md`` gives chained RAFT and the tracker on it before and after.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from motionrefine.io.track_formats import write_tapvid_pickle  # noqa: E402
from motionrefine.track.eval_scenes import heldout_real_scenes  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", required=True, help="a folder of .jpg/.png frames whose images texture the scenes")
    ap.add_argument("--out", required=True, help="the pickle to write")
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--frames-per-scene", type=int, default=24)
    ap.add_argument("--size", type=int, nargs=2, default=[144, 256], metavar=("H", "W"))
    ap.add_argument("--presets", default="nonrigid_mild,easy")
    ap.add_argument("--tracks", type=int, default=128)
    ap.add_argument("--seed", type=int, default=300)
    args = ap.parse_args(argv)
    scenes = heldout_real_scenes(args.frames, n=args.scenes, frames=args.frames_per_scene, height=args.size[0],
                                 width=args.size[1], seed=args.seed, preset_mix=args.presets, n_tracks=args.tracks)
    stem = Path(args.frames).name
    names = [f"{stem}{i}" for i in range(len(scenes))]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_tapvid_pickle(args.out, {n: (sc.frames, sc.tracks, ~sc.occluded) for n, sc in zip(names, scenes)})
    for name, sc in zip(names, scenes):
        t, h, w = sc.frames.shape[:3]
        print(f"{name}: {sc.name}, {t} frames {w}x{h}, {len(sc.tracks)} tracks, "
              f"{sc.occluded.mean():.1%} of points occluded")

if __name__ == "__main__":
    main()
