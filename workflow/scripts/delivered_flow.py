"""Snakemake script of rules delivered_flow and inferred_flow: one video's flow from the weights its
verdict (guard.json, or a clip check) hands it; the choice is recorded in the store's attrs."""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as rule flow: idle threads sleep (docs/performance.md)
import json
import sys

from motionrefine.config.schema import job_log
from motionrefine.deliver.package import delivered_flow

with job_log(snakemake.log[0]):
    i, p = snakemake.input, snakemake.params
    verdict = json.loads(open(i.verdict).read()) if "verdict" in i.keys() else None
    delivered_flow(i.frames, snakemake.output[0], snakemake.wildcards.video, verdict, i.pretrained,
                   i.refined if "refined" in i.keys() else None, p.settings, threads=snakemake.threads,
                   expected_sha256=p.sha256, progress=sys.stderr.isatty())
