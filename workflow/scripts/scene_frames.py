"""Snakemake script of rule scene_frames: a benchmark scene's frames -> results/frames/{bench}__{scene}.zarr."""

from motionrefine.bench.scenes import load_flow_scene, write_scene_frames
from motionrefine.config.schema import job_log

with job_log(snakemake.log[0]):
    w = snakemake.wildcards
    sc = load_flow_scene(snakemake.params.kind, w.scene, snakemake.input.source, w.bench, snakemake.params.options)
    write_scene_frames(sc, snakemake.output[0], source=snakemake.input.source)
