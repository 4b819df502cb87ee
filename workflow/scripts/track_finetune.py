"""Snakemake script of rule track_finetune: verified tracks -> results/tracking/finetune/refined.pth."""
import shutil

from motionrefine.config.schema import job_log
from motionrefine.train.workdir import training_workdir
from motionrefine.track.finetune import finetune_tracker

with job_log(snakemake.log[0]) as log:
    settings = dict(snakemake.params.settings, threads=snakemake.threads)
    labels, frames = list(snakemake.input.labels), list(snakemake.input.frames)
    raft = snakemake.input.raft if isinstance(snakemake.input.raft, str) else None  # flow-small only
    work = training_workdir(snakemake.params.workdir, labels + [snakemake.input.checkpoint], settings)
    summary = finetune_tracker(settings, labels, frames, snakemake.input.checkpoint, str(work),
                               expected_sha256=snakemake.params.sha256, raft_checkpoint=raft)
    shutil.copyfile(work / "loss.tsv", snakemake.output.loss)
    shutil.copyfile(work / "final.pth", snakemake.output.weights)
    log.info("refined tracker: %s (%s)", snakemake.output.weights, summary)
