"""Snakemake script of rule label_quality: each scene's pseudo-labels against its ground truth."""

import pandas as pd

from motionrefine.bench.scenes import label_quality, load_flow_scene
from motionrefine.config.schema import job_log

with job_log(snakemake.log[0]):
    rows = []
    for s, labels in zip(snakemake.params.scenes, snakemake.input.labels):
        scene = load_flow_scene(s.kind, s.name, s.source, s.benchmark, s.reader_options)
        rows.append(label_quality(labels, scene, snakemake.params.speed_bins))
    pd.DataFrame(rows).to_csv(snakemake.output[0], index=False)
