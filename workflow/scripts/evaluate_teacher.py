"""Snakemake script of rule evaluate_teacher: the pretrained model at the student's and at the
teacher's settings on every benchmark scene, timed -> results/eval/teacher.csv."""

import pandas as pd

from motionrefine.bench.scenes import load_flow_scene
from motionrefine.config.schema import job_log
from motionrefine.flow.evaluate import teacher_vs_student

with job_log(snakemake.log[0]):
    p = snakemake.params
    frames = []
    for s in p.scenes:
        scene = load_flow_scene(s.kind, s.name, s.source, s.benchmark, s.reader_options)
        frames.append(teacher_vs_student(snakemake.input.pretrained, [scene], p.teacher.teacher(),
                                         **p.student._asdict(), threads=snakemake.threads, benchmark=s.benchmark))
    pd.concat(frames, ignore_index=True).to_csv(snakemake.output[0], index=False)
