"""Snakemake script of rule infer_check: the candidate vs the pretrained model on a clip's teacher labels."""

import json

from motionrefine.config.schema import job_log
from motionrefine.core.store import write_text_atomic
from motionrefine.flow.guard import check_clip

with job_log(snakemake.log[0]) as log:
    i, s = snakemake.input, snakemake.params.settings
    entry = check_clip(i.frames, i.labels, i.pretrained, i.candidate, variant=s.variant, iters=s.iters,
                       expected_sha256=snakemake.params.sha256, threads=snakemake.threads,
                       rule=s.rule(),
                       block=s.holdout_block)
    write_text_atomic(snakemake.output[0], json.dumps(entry, indent=2))
    log.info("clip check: %s", entry["reason"])
