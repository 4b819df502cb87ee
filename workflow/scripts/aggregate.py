"""Snakemake script of rule aggregate: label stores of a run's videos -> results/train/{run}.json."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the library, installed or not

from motionrefine.config import job_log
from motionrefine.labels import aggregate_labels

with job_log(snakemake.log[0]):
    aggregate_labels(list(snakemake.input.labels), list(snakemake.input.frames), snakemake.output[0])
