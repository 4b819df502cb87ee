"""Snakemake script of rule evaluate: pretrained, fine-tuned, refined on a run's scenes -> results/eval/{run}.csv."""

import pandas as pd

from motionrefine.bench.scenes import load_flow_scene
from motionrefine.config.schema import job_log
from motionrefine.flow.evaluate import evaluate_flow

with job_log(snakemake.log[0]):
    p = snakemake.params
    frames = []
    for s in p.scenes:
        scene = load_flow_scene(s.kind, s.name, s.source, s.benchmark, s.reader_options)
        # The ablation evaluates one variant's weights: no guard, so no separate "trained".
        models = {"pretrained": snakemake.input.pretrained, "trained": snakemake.input.get("trained"),
                  "refined": snakemake.input.refined}
        models = {k: v for k, v in models.items() if v}
        df = evaluate_flow(models,
                           [scene], **p.settings._asdict(), threads=snakemake.threads, benchmark=s.benchmark)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "run", snakemake.wildcards.run)
    out.to_csv(snakemake.output[0], index=False)
