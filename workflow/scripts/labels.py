"""Snakemake script of rule labels: frames + flow -> results/labels/flow/{video}.zarr."""

from motionrefine.config.schema import job_log
from motionrefine.flow.labels import make_flow_labels

with job_log(snakemake.log[0]):
    v = snakemake.params.verify
    make_flow_labels(
        frames_path=snakemake.input.frames,
        flow_path=snakemake.input.flow,
        out_path=snakemake.output[0],
        alpha=v["alpha"],
        beta=v["beta"],
        colour=v["colour"],
        max_flow=v["max_flow"],
        checks=v["checks"],
        speed_bins=v["speed_bins"],
        batch_size=snakemake.params.batch_size,
        threads=snakemake.threads,
    )
