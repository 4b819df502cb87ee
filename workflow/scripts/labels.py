"""Snakemake script of rule labels: frames + flow -> results/labels/flow/{video}.zarr."""

from motionrefine.config.schema import job_log
from motionrefine.flow.labels import make_flow_labels

with job_log(snakemake.log[0]):
    make_flow_labels(
        frames_path=snakemake.input.frames,
        flow_path=snakemake.input.flow,
        out_path=snakemake.output[0],
        **snakemake.params.settings._asdict(),
        threads=snakemake.threads,
    )
