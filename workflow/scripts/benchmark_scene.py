"""Snakemake script of rule benchmark_scene: render one real-texture scene with exact ground truth."""

from motionrefine.bench.scenes import build_realtex_scene
from motionrefine.config.schema import job_log
from motionrefine.config.plan import realtex_preset

with job_log(snakemake.log[0]):
    spec, i = snakemake.params.spec, snakemake.params.index
    height, width = spec["size"]
    build_realtex_scene(
        list(snakemake.input.sources),
        snakemake.output[0],
        preset=realtex_preset(spec, i),
        height=height,
        width=width,
        frames=spec["frames"],
        seed=spec["seed"] * 1000 + i,
        checkpoint=snakemake.input.checkpoint,
        variant=snakemake.params.variant,
        iters=snakemake.params.iters,
    )
