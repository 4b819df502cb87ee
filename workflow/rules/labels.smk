rule labels:
    """Cycle-verify the teacher's flow of one video: the sparse pseudo-label store."""
    input:
        frames="results/frames/{video}.zarr",
        flow=label_flow,
    output:
        directory("results/labels/flow/{video}.zarr"),
    log:
        "results/logs/labels/{video}.log",
    benchmark:
        "results/benchmarks/labels/{video}.tsv"
    params:
        settings=LABELS,
    threads: res("labels", "threads")
    resources:
        mem_mb=res("labels", "mem_mb"),
        runtime=res("labels", "runtime"),
        gpu=res("labels", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/labels.py"


rule aggregate:
    """Index the label stores of one refinement run's videos into its training set."""
    input:
        labels=lambda wc: expand("results/labels/flow/{video}.zarr", video=run_videos(wc)),
        frames=lambda wc: expand("results/frames/{video}.zarr", video=run_videos(wc)),
    output:
        "results/train/{run}.json",
    log:
        "results/logs/aggregate/{run}.log",
    benchmark:
        "results/benchmarks/aggregate/{run}.tsv"
    threads: 1
    resources:
        mem_mb=res("aggregate", "mem_mb"),
        runtime=res("aggregate", "runtime"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/aggregate.py"
