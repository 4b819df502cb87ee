"""Snakemake script of rule track_labels: frames -> results/labels/tracks/{video}.zarr."""

import torch

from motionrefine.config.schema import job_log
from motionrefine.models.pips.flowpips import FLOWPIPS_SIZE
from motionrefine.track.labels import make_track_labels
from motionrefine.track.teachers import make_flowpips_labels

with job_log(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    kwargs = snakemake.params.settings.kwargs()
    i = snakemake.input
    if kwargs["size"] == FLOWPIPS_SIZE:
        kwargs.pop("size")
        teacher_flow = i.teacher_flow if isinstance(i.teacher_flow, str) else None
        make_flowpips_labels(i.frames, i.checkpoint, i.raft, snakemake.output[0], teacher_flow=teacher_flow,
                             video=snakemake.wildcards.video, **kwargs)
    else:
        make_track_labels(i.frames, i.checkpoint, snakemake.output[0], video=snakemake.wildcards.video, **kwargs)
