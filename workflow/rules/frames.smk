rule frames:
    """Decode the selected frames of one video (file or image folder) into a Zarr store."""
    input:
        source=lambda wc: sample(wc)["path"],
    output:
        directory("results/frames/{video}.zarr"),
    log:
        "results/logs/frames/{video}.log",
    benchmark:
        "results/benchmarks/frames/{video}.tsv"
    wildcard_constraints:
        video=SAMPLE_PATTERN,
    params:
        start=lambda wc: sample(wc)["start"],
        end=lambda wc: sample(wc)["end"],
        stride=lambda wc: sample(wc)["stride"],
        resize=lambda wc: sample(wc)["resize"],
    threads: res("frames", "threads")
    resources:
        mem_mb=res("frames", "mem_mb"),
        runtime=res("frames", "runtime"),
        gpu=res("frames", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/frames.py"
