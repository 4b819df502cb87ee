rule texture_frames:
    """A few frames of a real-texture benchmark's source outside the sample sheet (a video or a
    frame folder named by path in `benchmarks.<name>.sources`)."""
    input:
        source=lambda wc: TEXTURE_PATHS[f"results/textures/{wc.bench}/{wc.texture}.zarr"],
    output:
        directory("results/textures/{bench}/{texture}.zarr"),
    log:
        "results/logs/texture_frames/{bench}/{texture}.log",
    benchmark:
        "results/benchmarks/texture_frames/{bench}/{texture}.tsv"
    params:
        **plan.TEXTURE_RANGE,
        resize=None,
    threads: res("frames", "threads")
    resources:
        mem_mb=res("frames", "mem_mb"),
        runtime=res("frames", "runtime"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/frames.py"


rule benchmark_scene:
    """Render one real-texture scene with exact ground truth from its sources' frames (by default
    the sample videos')."""
    input:
        sources=lambda wc: [t.store for t in TEXTURES[wc.bench]],
        checkpoint=checkpoint_path,
    output:
        directory("results/scenes/{bench}/{scene}.zarr"),
    log:
        "results/logs/benchmark/{bench}/{scene}.log",
    benchmark:
        "results/benchmarks/benchmark_scene/{bench}/{scene}.tsv"
    params:
        spec=lambda wc: plan.scene_spec(config["benchmarks"][wc.bench]),
        index=lambda wc: int(wc.scene[1:]),
        variant=config["model"]["variant"],
        iters=config["model"]["iters"],
    wildcard_constraints:
        scene="s[0-9]+",
    threads: res("benchmark", "threads")
    resources:
        mem_mb=res("benchmark", "mem_mb"),
        runtime=res("benchmark", "runtime"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/benchmark_scene.py"


rule scene_frames:
    """A benchmark scene's frames as a frames store: the scene enters the label chain like a video."""
    input:
        source=scene_source,
    output:
        directory("results/frames/{bench}__{scene}.zarr"),
    log:
        "results/logs/scene_frames/{bench}__{scene}.log",
    benchmark:
        "results/benchmarks/scene_frames/{bench}__{scene}.tsv"
    params:
        scene=scene,
    threads: 1
    resources:
        mem_mb=res("benchmark", "mem_mb"),
        runtime=res("benchmark", "runtime"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/scene_frames.py"
