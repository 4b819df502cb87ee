rule flow:
    """Forward and backward flow of every consecutive frame pair with the frozen model
    (model = the configured name) or a refined one (model = refined-{run})."""
    input:
        frames="results/frames/{video}.zarr",
        checkpoint=flow_checkpoint,
    output:
        directory("results/flow/{model}/{video}.zarr"),
    log:
        "results/logs/flow/{model}/{video}.log",
    benchmark:
        "results/benchmarks/flow/{model}/{video}.tsv"
    wildcard_constraints:
        model=FLOW_MODEL_PATTERN,
    params:
        settings=FLOW,
        # Pinned for the configured checkpoint only; refined weights are made here.
        sha256=lambda wc: config["model"]["sha256"] if wc.model == MODEL else None,
    threads: res("flow", "threads")
    resources:
        mem_mb=res("flow", "mem_mb"),
        runtime=res("flow", "runtime"),
        gpu=res("flow", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/flow.py"


rule export_flow:
    """Flow of one video as files other tools read: Middlebury .flo, .npy or KITTI 16-bit PNG
    (fmt kitti-png), one per pair and direction."""
    input:
        "results/flow/{model}/{video}.zarr",
    output:
        directory("results/export/{model}/{video}.{fmt}"),
    log:
        "results/logs/export/{model}/{video}.{fmt}.log",
    benchmark:
        "results/benchmarks/export_flow/{model}/{video}.{fmt}.tsv"
    wildcard_constraints:
        model=FLOW_MODEL_PATTERN,
        fmt="flo|npy|kitti-png",
    threads: 1
    resources:
        mem_mb=res("export_flow", "mem_mb"),
        runtime=res("export_flow", "runtime"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/export_flow.py"
