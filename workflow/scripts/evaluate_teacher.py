"""Snakemake script of rule evaluate_teacher: the pretrained model at the student's settings
(timed) and the teacher's label-making flow on every benchmark scene -> results/eval/teacher.csv.
When the teacher is the student (self-labelling) there is no teacher store: it is run here."""

import pandas as pd

from motionrefine.bench.scenes import load_flow_scene
from motionrefine.config.schema import job_log
from motionrefine.flow.evaluate import teacher_vs_student

with job_log(snakemake.log[0]):
    p = snakemake.params
    stores = list(snakemake.input.teacher) or [None] * len(p.scenes)
    frames = []
    for s, store in zip(p.scenes, stores):
        scene = load_flow_scene(s.kind, s.name, s.source, s.benchmark, s.reader_options)
        frames.append(teacher_vs_student(snakemake.input.pretrained, [scene], p.teacher.teacher(),
                                         teacher_stores=[store] if store else None,
                                         **p.student._asdict(), threads=snakemake.threads, benchmark=s.benchmark))
    pd.concat(frames, ignore_index=True).to_csv(snakemake.output[0], index=False)
