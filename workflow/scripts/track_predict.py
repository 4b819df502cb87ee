"""Snakemake script of rule track_predict: frames -> results/tracking/predict/{video}.zarr."""

from motionrefine.config.schema import job_log
from motionrefine.track.predict import predict_tracks

with job_log(snakemake.log[0]):
    p = snakemake.params
    predict_tracks(snakemake.input.frames, snakemake.input.checkpoint, snakemake.output[0], size=p.size,
                   iters=p.iters, label_options=p.label_options, threads=snakemake.threads,
                   raft_checkpoint=snakemake.input.raft if isinstance(snakemake.input.raft, str) else None)
