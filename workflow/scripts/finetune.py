"""Snakemake script of rule finetune: training set -> results/finetune/{run}/trained.pth + loss.tsv.

Training state lives in a work folder named by a fingerprint of everything that changes the
result (training set, settings, start weights), so a killed job resumes from its last
checkpoint, while changed labels or settings start afresh instead of resuming stale state.
"""
import shutil

from motionrefine.config.schema import job_log
from motionrefine.flow.finetune import finetune
from motionrefine.train.workdir import training_workdir

with job_log(snakemake.log[0]) as log:
    settings = dict(snakemake.params.settings, threads=snakemake.threads)
    work = training_workdir(snakemake.params.workdir, [snakemake.input.train, snakemake.input.checkpoint], settings)
    summary = finetune(settings, snakemake.input.train, snakemake.input.checkpoint, str(work),
                       expected_sha256=snakemake.params.sha256)
    shutil.copyfile(work / "loss.tsv", snakemake.output.loss)
    shutil.copyfile(summary["final"], snakemake.output.weights)
    log.info("fine-tuned weights: %s (%s)", snakemake.output.weights, summary)
