"""Snakemake script of rule ablation: every variant's evaluation -> results/ablation/table.{csv,md}, figure.png."""

from motionrefine.report.ablation import build_ablation
from motionrefine.config.schema import job_log

with job_log(snakemake.log[0]):
    p, o = snakemake.params, snakemake.output
    build_ablation([(variant, seed, path) for (variant, _run, seed), path in zip(p.evaluated, snakemake.input.evals)],
                   dict(p.specs), o.table, o.markdown, o.figure, settings=dict(p.settings))
