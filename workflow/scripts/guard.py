"""Snakemake script of rule guard: fine-tuned vs pretrained weights on held-back pixels -> refined.pth."""

from motionrefine.config.schema import job_log
from motionrefine.flow.guard import guard_weights
from motionrefine.flow.holdout import HoldOut

with job_log(snakemake.log[0]) as log:
    s = snakemake.params.settings
    verdict = guard_weights(snakemake.input.pretrained, snakemake.input.trained, snakemake.input.train,
                            snakemake.output.weights, snakemake.output.verdict, variant=s.variant, iters=s.iters,
                            holdout=HoldOut(block=s.holdout_block, every=s.holdout_every),
                            rule=s.rule(),
                            enabled=s.enabled, expected_sha256=snakemake.params.sha256, threads=snakemake.threads)
    log.info("guard: %s", verdict["reason"])
    for video, entry in verdict["videos"].items():
        log.info("guard, %s: %s (%s)", video, entry["flag"], entry["reason"])
