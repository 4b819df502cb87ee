rule flow:
    """Forward and backward flow of every consecutive frame pair with the frozen model."""
    input:
        frames="results/frames/{video}.zarr",
        checkpoint=checkpoint_path,
    output:
        directory("results/flow/{model}/{video}.zarr"),
    log:
        "results/logs/flow/{model}/{video}.log",
    wildcard_constraints:
        model=re.escape(MODEL),
    params:
        variant=config["model"]["variant"],
        iters=config["model"]["iters"],
        batch_size=config["model"]["batch_size"],
        sha256=config["model"]["sha256"],
        alternate_corr_pixels=config["model"]["alternate_corr_pixels"],
    threads: res("flow", "threads")
    resources:
        mem_mb=res("flow", "mem_mb"),
        runtime=res("flow", "runtime"),
        gpu=res("flow", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/flow.py"
