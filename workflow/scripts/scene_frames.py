"""Snakemake script of rule scene_frames: a benchmark scene's frames -> results/frames/{bench}__{scene}.zarr."""

from motionrefine.bench.scenes import load_scene, write_scene_frames
from motionrefine.config.schema import job_log

with job_log(snakemake.log[0]):
    s = snakemake.params.scene
    sc = load_scene(s.kind, s.name, s.source, s.benchmark, s.reader_options)
    write_scene_frames(sc, snakemake.output[0], source=s.source)
