"""Snakemake script of rule aggregate: label stores of a run's videos -> results/train/{run}.json."""

from motionrefine.config.schema import job_log
from motionrefine.flow.labels import aggregate_labels

with job_log(snakemake.log[0]):
    aggregate_labels(list(snakemake.input.labels), list(snakemake.input.frames), snakemake.output[0])
