rule evaluate:
    """Pretrained, fine-tuned and refined (the guard's choice) model on the run's benchmark
    scenes: one row per (model, scene)."""
    input:
        pretrained=checkpoint_path,
        trained="results/finetune/{run}/trained.pth",
        refined="results/finetune/{run}/refined.pth",
        scenes=eval_sources,
    output:
        report("results/eval/{run}.csv", caption="../report/evaluation.rst", category="Before and after",
               subcategory="Evaluation tables", labels={"run": "{run}"}),
    log:
        "results/logs/evaluate/{run}.log",
    benchmark:
        "results/benchmarks/evaluate/{run}.tsv"
    params:
        scenes=eval_scenes,
        settings=EVAL,
    threads: res("evaluate", "threads")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
        gpu=res("evaluate", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/evaluate.py"


rule evaluate_teacher:
    """The label-maker as a baseline: the pretrained model at the teacher's settings and at the
    student's on every benchmark scene, with seconds per pair of each. The teacher's flow is the
    one its labels were made from (the teacher stores), so it is not run a second time."""
    input:
        pretrained=checkpoint_path,
        scenes=[s.source for s in SCENES.values()],
        teacher=[] if SELF_LABELLING else expand("results/teacher/{video}.zarr", video=list(SCENES)),
    output:
        report("results/eval/teacher.csv", caption="../report/teacher.rst", category="Before and after"),
    log:
        "results/logs/evaluate_teacher.log",
    benchmark:
        "results/benchmarks/evaluate_teacher/teacher.tsv"
    params:
        scenes=list(SCENES.values()),
        student=EVAL,
        teacher=TEACHER.without_budget(),
    threads: res("evaluate", "threads")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
        gpu=res("evaluate", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/evaluate_teacher.py"


rule label_quality:
    """Kept fraction and accuracy of each benchmark scene's own pseudo-labels against ground truth."""
    input:
        labels=expand("results/labels/flow/{video}.zarr", video=list(SCENES)),
        scenes=[s.source for s in SCENES.values()],
        # The student, whose EPE on the kept pixels the labels must beat.
        pretrained=checkpoint_path,
    output:
        report("results/eval/label_quality.csv", caption="../report/label_quality_table.rst",
               category="Pseudo-labels"),
    log:
        "results/logs/label_quality.log",
    benchmark:
        "results/benchmarks/label_quality/label_quality.tsv"
    params:
        scenes=list(SCENES.values()),
        speed_bins=LABELS.speed_bins,
        settings=EVAL,
    threads: res("evaluate", "threads")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/label_quality.py"
