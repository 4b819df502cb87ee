"""Snakemake script of rule model: the refined weights and their verdicts -> results/model/."""

from motionrefine.config.schema import job_log
from motionrefine.deliver.model import publish_model

with job_log(snakemake.log[0]):
    i, o = snakemake.input, snakemake.output
    publish_model(i.raft, i.guard, o.raft, o.guard, o.manifest, variant=snakemake.params.variant,
                  iters=snakemake.params.iters,
                  tracker=(i.tracker, i.tracker_guard, o.tracker, o.tracker_guard) if "tracker" in i.keys() else None)
