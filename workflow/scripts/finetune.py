"""Snakemake script of rule finetune: training set -> results/finetune/{run}/trained.pth + loss.tsv.

Training state lives in a work folder named by a fingerprint of everything that changes the
result (training set, settings, start weights), so a killed job resumes from its last
checkpoint, while changed labels or settings start afresh instead of resuming stale state.
More than one GPU in the rule's resources (or finetune.processes in the config) trains in
that many DDP processes (torchrun, or srun inside a SLURM job), as one process would.
"""
import json
import shutil

from motionrefine.config.schema import job_log
from motionrefine.core.device import claim_job_gpus
from motionrefine.flow.finetune import finetune
from motionrefine.train.launch import launch, training_processes
from motionrefine.train.workdir import training_workdir

with job_log(snakemake.log[0]) as log:
    settings = dict(snakemake.params.settings, threads=snakemake.threads)
    gpus = int(snakemake.resources.get("gpu", 0) or 0)
    processes = training_processes(settings.pop("processes", None), gpus)
    work = training_workdir(snakemake.params.workdir, [snakemake.input.train, snakemake.input.checkpoint], settings)
    kwargs = dict(training_set=snakemake.input.train, init_checkpoint=snakemake.input.checkpoint,
                  out_dir=str(work), expected_sha256=snakemake.params.sha256)
    if processes > 1:
        claim_job_gpus()  # the job's GPUs, taken and checked before the ranks start (they inherit them)
        # The job's CPU threads are shared among the ranks.
        settings["threads"] = max(1, snakemake.threads // processes)
        launch("motionrefine.flow.finetune:finetune", dict(kwargs, config=settings), processes, work, gpu=gpus > 1,
               threads=settings["threads"])
        summary = json.loads((work / "summary.json").read_text())
    else:
        summary = finetune(settings, **kwargs)
    shutil.copyfile(work / "loss.tsv", snakemake.output.loss)
    shutil.copyfile(summary["final"], snakemake.output.weights)
    log.info("fine-tuned weights: %s (%s)", snakemake.output.weights, summary)
