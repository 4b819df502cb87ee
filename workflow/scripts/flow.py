"""Snakemake script of rule flow: frames store -> results/flow/{model}/{video}.zarr (forward + backward)."""
import sys

from motionrefine.config.schema import job_log
from motionrefine.flow.inference import flow_stage

with job_log(snakemake.log[0]):
    p = snakemake.params
    flow_stage(
        frames_path=snakemake.input.frames,
        out_path=snakemake.output[0],
        checkpoint=snakemake.input.checkpoint,
        **p.settings._asdict(),
        threads=snakemake.threads,
        expected_sha256=p.sha256,
        # A bar on an interactive terminal; logs and cluster jobs get the summary line only.
        progress=sys.stderr.isatty(),
    )
