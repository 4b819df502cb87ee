"""Snakemake script of rule teacher: frames store -> results/teacher/{video}.zarr (the label-maker's flow)."""
import sys

from motionrefine.config.schema import job_log
from motionrefine.flow.inference import flow_stage
from motionrefine.flow.teacher import TeacherSettings

with job_log(snakemake.log[0]):
    s = snakemake.params.settings
    flow_stage(
        frames_path=snakemake.input.frames,
        out_path=snakemake.output[0],
        checkpoint=snakemake.input.checkpoint,
        variant=s.variant,
        batch_size=s.batch_size,
        alternate_corr_pixels=s.alternate_corr_pixels,
        threads=snakemake.threads,
        expected_sha256=snakemake.params.sha256,
        progress=sys.stderr.isatty(),
        teacher=TeacherSettings(scales=tuple(s.scales), iters=s.iters, flip=s.flip, max_pixels=s.max_pixels),
    )
