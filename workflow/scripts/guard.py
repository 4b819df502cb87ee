"""Snakemake script of rule guard: fine-tuned vs pretrained weights on held-back pixels -> refined.pth."""

from motionrefine.config.schema import job_log
from motionrefine.flow.guard import HoldOut, guard_weights

with job_log(snakemake.log[0]) as log:
    p = snakemake.params
    holdout = HoldOut(block=p.holdout["holdout_block"], every=p.holdout["holdout_every"])
    verdict = guard_weights(snakemake.input.pretrained, snakemake.input.trained, snakemake.input.train,
                            snakemake.output.weights, snakemake.output.verdict, variant=p.variant, iters=p.iters,
                            holdout=holdout, margin=p.guard["margin"], expected_sha256=p.sha256,
                            threads=snakemake.threads)
    log.info("guard: %s", verdict["reason"])
