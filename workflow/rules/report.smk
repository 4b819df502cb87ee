rule report:
    """Before/after tables, per-scene % EPE change, label coverage, sample flows, loss curves."""
    input:
        evals=expand("results/eval/{run}.csv", run=list(RUNS)),
        label_quality="results/eval/label_quality.csv" if SCENES else [],
        labels=expand("results/labels/flow/{video}.zarr", video=list(SAMPLES.index) + list(SCENES)),
        frames=expand("results/frames/{video}.zarr", video=list(SAMPLES.index) + list(SCENES)),
        losses=expand("results/finetune/{run}/loss.tsv", run=list(RUNS)),
        refined=expand("results/finetune/{run}/refined.pth", run=list(RUNS)),
        pretrained=checkpoint_path,
        # Built first so the report can include it (read from results/tracking/).
        tracking="results/tracking/eval.csv" if tracking_enabled() else [],
    output:
        html="results/report/index.html",
        summary="results/report/summary.md",
        table="results/report/before_after.csv",
    log:
        "results/logs/report.log",
    params:
        runs=list(RUNS),
        videos=list(SAMPLES.index) + list(SCENES),
        variant=config["model"]["variant"],
        iters=config["model"]["iters"],
        config=config,
    threads: 1
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/report.py"
