"""Snakemake script of rules labels and infer_labels: frames -> results/labels/flow/{video}.zarr
(or results/labels/check/), the teacher's flow verified as it is made (and, for rule labels,
written as results/teacher/{video}.zarr), or (teacher == student) the student's flow store verified."""
import os

# Idle OpenMP threads sleep instead of spinning: on a shared or oversubscribed CPU, spinning
# threads wait at every barrier for a descheduled peer (the teacher at 2 threads under load
# 16 ran 10x slower than with this, docs/performance.md). Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import sys

from motionrefine.config.schema import job_log
from motionrefine.flow.labels import make_flow_labels, make_teacher_labels

with job_log(snakemake.log[0]):
    p = snakemake.params
    verify = p.settings._asdict()
    if "flow" in snakemake.input.keys():
        make_flow_labels(frames_path=snakemake.input.frames, flow_path=snakemake.input.flow,
                         out_path=snakemake.output.labels, **verify, threads=snakemake.threads)
    else:
        verify.pop("batch_size")  # the teacher's windows (model.batch_size) are verified as they come
        # Rule infer_labels writes no teacher store: only its labels are scored.
        make_teacher_labels(frames_path=snakemake.input.frames, out_path=snakemake.output.labels,
                            flow_out=snakemake.output.get("teacher"),
                            checkpoint=snakemake.input.checkpoint, **p.teacher.stage_kwargs(), **verify,
                            threads=snakemake.threads, expected_sha256=p.sha256,
                            progress=sys.stderr.isatty())
