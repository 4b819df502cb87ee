"""Snakemake script of rule export_tracks: a tracking store -> CSV or TAP-Vid pickle."""

from motionrefine.config.schema import job_log
from motionrefine.io.track_formats import export_track_store

with job_log(snakemake.log[0]):
    export_track_store(snakemake.input.tracks, snakemake.input.frames, snakemake.output[0], snakemake.params.fmt,
                       name=snakemake.wildcards.video)
