"""Snakemake script of rule scene_frames: a benchmark scene's frames -> results/frames/{bench}__{scene}.zarr."""

from motionrefine.bench.scenes import load_flow_scene, write_scene_frames
from motionrefine.config.plan import TRACK_KINDS
from motionrefine.config.schema import job_log
from motionrefine.io.readers import read_tapvid

with job_log(snakemake.log[0]):
    s = snakemake.params.scene
    if s.kind in TRACK_KINDS:  # a TAP-Vid video, read as the tracking comparison reads it
        (sc,) = read_tapvid(s.source, videos=[s.name], **s.reader_options)
        sc.meta.update({"benchmark": s.benchmark, "kind": s.kind})
    else:
        sc = load_flow_scene(s.kind, s.name, s.source, s.benchmark, s.reader_options)
    write_scene_frames(sc, snakemake.output[0], source=s.source)
