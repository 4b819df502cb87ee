"""Snakemake script of rules deliverable and infer_deliverable: one video's flow, tracks, preview and meta.json."""

import json

from motionrefine.config.schema import job_log
from motionrefine.deliver.package import choose_flow, write_deliverable

with job_log(snakemake.log[0]):
    i, video = snakemake.input, snakemake.wildcards.video
    flows = {k: i[k] for k in ("pretrained", "refined") if k in i.keys()}
    verdict = json.loads(open(i.guard).read()) if "guard" in i.keys() else None
    tracks = i.tracks if "tracks" in i.keys() else None
    write_deliverable(snakemake.output[0], video, i.frames, flows, choose_flow(verdict, video),
                      snakemake.params.settings, tracks_path=tracks, extra={"queries_csv": snakemake.params.queries})
