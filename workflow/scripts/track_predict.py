"""Snakemake script of rules track_predict and infer_tracks: frames -> a tracking store, from the
sheet's query points (each tracked both ways from its own frame) or a grid at the first frame."""

from motionrefine.config.schema import job_log
from motionrefine.track.queries import track_queries

with job_log(snakemake.log[0]):
    i, p = snakemake.input, snakemake.params
    if "rafts" in i.keys():  # infer: the tracker on whichever RAFT-small it was trained with
        from motionrefine.models.pips.flowpips import raft_for_tracker

        raft = raft_for_tracker(i.checkpoint, list(i.rafts))
    else:
        raft = i.raft if isinstance(i.raft, str) else None
    queries = i.queries if isinstance(i.queries, str) else None
    track_queries(i.frames, i.checkpoint, snakemake.output[0], queries=queries,
                  grid_size=None if queries else p.grid_size, size=p.size, iters=p.iters, raft_checkpoint=raft,
                  threads=snakemake.threads, label_options=p.label_options, max_pixels=p.max_pixels)
