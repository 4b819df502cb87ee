"""Snakemake script of rule track_finetune: verified tracks -> results/tracking/finetune/refined.pth
(the guard's choice of update) and guard.json."""
import json
import shutil

from motionrefine.config.schema import job_log
from motionrefine.train.workdir import training_workdir
from motionrefine.track.finetune import finetune_tracker

with job_log(snakemake.log[0]) as log:
    i = snakemake.input
    settings = dict(snakemake.params.settings, threads=snakemake.threads)
    labels, frames = list(i.labels), list(i.frames)
    raft = i.raft if isinstance(i.raft, str) else None  # flow-small only
    backbone = i.backbone if isinstance(i.backbone, str) else None  # tracking.refined_raft
    work = training_workdir(snakemake.params.workdir, labels + [i.checkpoint] + ([backbone] if backbone else []),
                            settings)
    summary = finetune_tracker(settings, labels, frames, i.checkpoint, str(work),
                               expected_sha256=snakemake.params.sha256, raft_checkpoint=raft, backbone=backbone)
    shutil.copyfile(work / "loss.tsv", snakemake.output.loss)
    shutil.copyfile(work / "final.pth", snakemake.output.weights)
    with open(snakemake.output.guard, "w") as f:
        json.dump({**(summary.get("guard") or {"keep_refined": True, "reason": "guard off"}),
                   "weights_sha256": summary["final_sha256"], "raft_sha256": summary.get("raft_sha256")}, f, indent=1)
    log.info("refined tracker: %s (%s)", snakemake.output.weights, summary)
