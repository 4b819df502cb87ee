"""Snakemake script of rule track_labels: frames -> results/labels/tracks/{video}.zarr."""

import torch

from motionrefine.config.schema import job_log
from motionrefine.track.labels import make_track_labels

with job_log(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    make_track_labels(snakemake.input.frames, snakemake.input.checkpoint, snakemake.output[0],
                      video=snakemake.wildcards.video, **snakemake.params.settings.kwargs())
