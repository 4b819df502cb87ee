"""Snakemake script of rules deliverable and infer_deliverable: one video's flow, tracks, preview and meta.json."""

from motionrefine.config.schema import job_log
from motionrefine.deliver.package import write_deliverable

with job_log(snakemake.log[0]):
    i = snakemake.input
    write_deliverable(snakemake.output[0], snakemake.wildcards.video, i.frames, i.flow, snakemake.params.settings,
                      tracks_path=i.tracks if "tracks" in i.keys() else None,
                      extra={"queries_csv": snakemake.params.queries})
