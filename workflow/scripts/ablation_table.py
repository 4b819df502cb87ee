"""Snakemake script of rule ablation: every variant's evaluation -> results/ablation/table.{csv,md}, figure.png."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the library, installed or not

from motionrefine.ablation import build_ablation
from motionrefine.config import job_log

with job_log(snakemake.log[0]):
    p, o = snakemake.params, snakemake.output
    build_ablation([(variant, path) for (variant, _run), path in zip(p.evaluated, snakemake.input.evals)],
                   dict(p.specs), o.table, o.markdown, o.figure, settings=dict(p.settings))
