"""Snakemake script of rule track_eval: four long-range trackers on the real-texture scenes."""

import torch

from motionrefine.config.schema import job_log
from motionrefine.track.evaluate import tracker_comparison

with job_log(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    i, p = snakemake.input, snakemake.params
    tracker_comparison(
        scene_paths=list(i.scenes),
        raft={"chained RAFT (pretrained)": i.raft_pretrained, "chained RAFT (refined)": i.raft_refined},
        pips={"tracker (pretrained)": i.tracker_pretrained, "tracker (refined)": i.tracker_refined},
        **p.settings._asdict(),
        tapvid=[{"benchmark": s.benchmark, "name": s.name, "path": s.source, "options": s.reader_options}
                for s in p.tapvid],
        out_table=snakemake.output.table, out_figure=snakemake.output.figure, out_summary=snakemake.output.summary,
    )
