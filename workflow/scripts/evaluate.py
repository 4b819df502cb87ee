"""Snakemake script of rule evaluate: pretrained vs refined on a run's scenes -> results/eval/{run}.csv."""

import pandas as pd

from motionrefine.bench.scenes import load_flow_scene
from motionrefine.config.schema import job_log
from motionrefine.flow.evaluate import evaluate_flow

with job_log(snakemake.log[0]):
    p = snakemake.params
    frames = []
    for s in p.scenes:
        scene = load_flow_scene(s.kind, s.name, s.source, s.benchmark, s.reader_options)
        df = evaluate_flow({"pretrained": snakemake.input.pretrained, "refined": snakemake.input.refined},
                           [scene], **p.settings._asdict(), threads=snakemake.threads, benchmark=s.benchmark)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "run", snakemake.wildcards.run)
    out.to_csv(snakemake.output[0], index=False)
