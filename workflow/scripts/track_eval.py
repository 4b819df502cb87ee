"""Snakemake script of rule track_eval: long-range trackers, pre-trained and refined (heldout,
transductive), on the real-texture scenes, and (flow-small) the pseudo-label quality per teacher on them."""

import json
from pathlib import Path

import pandas as pd
import torch

from motionrefine.config.plan import track_scene_names
from motionrefine.config.schema import job_log
from motionrefine.track.comparison import comparison_trackers, tracker_comparison
from motionrefine.track.label_quality import label_quality

with job_log(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    i, p, o = snakemake.input, snakemake.params, snakemake.output
    flowpips = isinstance(i.tracker_raft, str)  # flow-small: the RAFT-small each tracker runs on
    trackers = comparison_trackers(
        p.settings.size, i.raft_pretrained, i.raft_refined, i.tracker_pretrained, i.tracker_refined,
        tracker_raft=i.tracker_raft if flowpips else None,
        tracker_refined_raft=i.tracker_refined_raft if flowpips else None,
        transductive=dict(zip(p.transductive, i.raft_transductive)),  # scene name -> the RAFT refined on it
        tracker_transductive=flowpips and p.flowpips_transductive)
    tracker_comparison(
        scene_paths=list(i.scenes), **trackers,
        **p.settings._asdict(),
        tapvid=[{"benchmark": s.benchmark, "name": s.name, "path": s.source, "options": s.reader_options}
                for s in p.tapvid],
        out_table=o.table, out_figure=o.figure, out_summary=o.summary, out_tracks_figure=o.tracks_figure,
    )
    guard = json.loads(Path(i.tracker_guard).read_text())
    if guard.get("held_tracks"):  # the report shows summary.md: say what the tracker's guard chose
        with open(o.summary, "a") as f:
            f.write(f"\nTracker guard: on {guard['held_tracks']} held-back label tracks, the distance to the labels "
                    f"went {guard['held_epe_initial']:.3f} px (initial update) → {guard['held_epe_refined']:.3f} px "
                    f"(fine-tuned): kept the {'fine-tuned' if guard['keep_refined'] else 'initial'} update.\n")
    rows = []
    names = dict(zip(i.scenes, track_scene_names(list(i.scenes))))  # as the comparison names them
    for scene, flow in zip(p.label_scenes, i.teacher_flows):
        rows += label_quality(scene, flow, i.tracker_pretrained, i.tracker_raft, p.labels.kwargs(),
                              scene_name=names.get(scene))
    lq = pd.DataFrame(rows, columns=["scene", "teacher", "seeds", "seeds_kept", "tracks", "err_mean_px",
                                     "err_median_px", "within_1px", "theta_px"])
    lq.to_csv(o.labels, index=False)
    if len(lq):  # the report shows summary.md: add the label quality per teacher
        lines = ["", "Pseudo-labels per teacher on the generated scenes (error against the exact tracks, px):", "",
                 "| scene | teacher | seeds kept | tracks | error mean | error median | within 1 px |",
                 "|---|---|---|---|---|---|---|"]
        lines += [f"| {r.scene} | {r.teacher} | {r.seeds_kept}/{r.seeds} | {r.tracks} | {r.err_mean_px:.2f} | "
                  f"{r.err_median_px:.2f} | {r.within_1px:.2f} |" for r in lq.itertuples()]
        with open(o.summary, "a") as f:
            f.write("\n".join(lines) + "\n")
