rule report:
    """Before/after tables, per-scene % EPE change, guard verdicts, teacher vs student, label coverage, sample flows, loss curves."""
    input:
        evals=expand("results/eval/{run}.csv", run=list(RUNS)),
        label_quality="results/eval/label_quality.csv" if SCENES else [],
        # The teacher (label-maker) and the student on every benchmark scene, timed.
        teacher_eval="results/eval/teacher.csv" if SCENES else [],
        labels=expand("results/labels/flow/{video}.zarr", video=list(SAMPLES.index) + list(SCENES)),
        frames=expand("results/frames/{video}.zarr", video=list(SAMPLES.index) + list(SCENES)),
        losses=expand("results/finetune/{run}/loss.tsv", run=list(RUNS)),
        refined=expand("results/finetune/{run}/refined.pth", run=list(RUNS)),
        # The guard's verdict per run (same order as runs): the Guard section.
        guards=expand("results/finetune/{run}/guard.json", run=list(RUNS)),
        pretrained=checkpoint_path,
        # The tracking comparison's summary and figure (built first so the report includes them).
        tracking=["results/tracking/summary.md", "results/tracking/delta_avg.png"] if tracking_enabled() else [],
    # report(): what `snakemake --report` shows, with the captions of workflow/report/.
    output:
        html=report("results/report/index.html", caption="../report/page.rst", category="Overview"),
        summary="results/report/summary.md",
        table=report("results/report/before_after.csv", caption="../report/before_after.rst",
                     category="Before and after"),
        change=report("results/report/figures/epe_change.png", caption="../report/epe_change.rst",
                      category="Before and after"),
        flows=report("results/report/figures/sample_flows.png", caption="../report/sample_flows.rst",
                     category="Before and after"),
        coverage=report("results/report/figures/label_coverage.png", caption="../report/label_coverage.rst",
                        category="Pseudo-labels"),
        coverage_table=report("results/report/label_coverage.csv", caption="../report/label_coverage_table.rst",
                              category="Pseudo-labels"),
        quality=report("results/report/figures/label_quality.png", caption="../report/label_quality.rst",
                       category="Pseudo-labels"),
        losses=report("results/report/figures/loss_curves.png", caption="../report/loss_curves.rst",
                      category="Fine-tuning"),
    log:
        "results/logs/report.log",
    benchmark:
        "results/benchmarks/report/report.tsv"
    # Only what the report shows: a change elsewhere in the config (resources, tracking, the
    # ablation's variants) does not rerun it and its sample-flow inference.
    params:
        runs=list(RUNS),
        videos=list(SAMPLES.index) + list(SCENES),
        variant=config["model"]["variant"],
        iters=config["model"]["iters"],
        model=config["model"],
        verify=config["verify"],
        finetune=config["finetune"],
        refine=config["refine"],
        # Each benchmark's dev/test role: the report's role column and its split means.
        roles={s.benchmark: s.role for s in SCENES.values()},
        # The ablation is not an input: `snakemake ablation` is a separate target, and
        # declaring its table would build all its fine-tunes with every report. Its table and
        # figure are shown when they exist, so rebuild the report after the ablation
        # (`--forcerun report`) to include it.
        ablation=["results/ablation/table.md", "results/ablation/figure.png"],
    threads: 1
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/report.py"
