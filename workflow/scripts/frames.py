"""Snakemake script of rule frames: one video (file or image folder) -> results/frames/{video}.zarr."""

from motionrefine.config.schema import job_log
from motionrefine.io.video import extract_frames

with job_log(snakemake.log[0]):
    p = snakemake.params
    extract_frames(snakemake.input.source, snakemake.output[0], start=p.start, end=p.end, stride=p.stride, resize=p.resize)
