"""Snakemake script of rule infer_labels: the teacher's verified labels on a few pairs of a clip (its check)."""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the labels job: idle threads sleep (docs/performance.md)

from motionrefine.config.schema import job_log
from motionrefine.flow.labels import make_teacher_labels

with job_log(snakemake.log[0]):
    p = snakemake.params
    verify = p.settings._asdict()
    verify.pop("batch_size")
    make_teacher_labels(frames_path=snakemake.input.frames, out_path=snakemake.output[0],
                        checkpoint=snakemake.input.checkpoint, **p.teacher.stage_kwargs(), **verify,
                        threads=snakemake.threads, expected_sha256=p.sha256)
