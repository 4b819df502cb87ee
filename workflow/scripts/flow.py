"""Snakemake script of rule flow: frames store -> forward + backward flow store
(results/flow/{model}/{video}.zarr). The teacher's store is written by the labels job."""
import os

# Idle OpenMP threads sleep instead of spinning: on a shared or oversubscribed CPU, spinning
# threads wait at every barrier for a descheduled peer (the teacher at 2 threads under load
# 16 ran 10x slower than with this, docs/performance.md). Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import sys

from motionrefine.config.schema import job_log
from motionrefine.flow.inference import flow_stage

with job_log(snakemake.log[0]):
    p = snakemake.params
    flow_stage(
        frames_path=snakemake.input.frames,
        out_path=snakemake.output[0],
        checkpoint=snakemake.input.checkpoint,
        **p.settings.stage_kwargs(),
        threads=snakemake.threads,
        expected_sha256=p.sha256,
        # A bar on an interactive terminal; logs and cluster jobs get the summary line only.
        progress=sys.stderr.isatty(),
    )
