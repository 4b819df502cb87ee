"""Snakemake script of rule finetune: training set -> results/finetune/{run}/refined.pth + loss.tsv.

Training state lives in a work folder named by a fingerprint of everything that changes the
result (training set, settings, start weights), so a killed job resumes from its last
checkpoint, while changed labels or settings start afresh instead of resuming stale state.
"""
import hashlib
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the library, installed or not

from motionrefine.config import job_log
from motionrefine.finetune import finetune
from motionrefine.models.checkpoint import sha256_file

with job_log(snakemake.log[0]) as log:
    settings = dict(snakemake.params.settings, threads=snakemake.threads)
    train = Path(snakemake.input.train)
    fp = hashlib.sha256()
    fp.update(train.read_bytes())
    fp.update(json.dumps({k: v for k, v in settings.items() if k not in ("threads", "device")}, sort_keys=True,
                         default=str).encode())
    fp.update(sha256_file(snakemake.input.checkpoint).encode())
    root = Path(snakemake.params.workdir)
    work = root / f"work-{fp.hexdigest()[:16]}"
    for stale in root.glob("work-*"):
        if stale != work:
            log.info("removing training state of other inputs: %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
    summary = finetune(settings, str(train), snakemake.input.checkpoint, str(work),
                       expected_sha256=snakemake.params.sha256)
    shutil.copyfile(work / "loss.tsv", snakemake.output.loss)
    shutil.copyfile(summary["final"], snakemake.output.weights)
    log.info("refined weights: %s (%s)", snakemake.output.weights, summary)
