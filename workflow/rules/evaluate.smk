rule evaluate:
    """Pretrained, fine-tuned and refined (the guard's choice) model on the run's benchmark
    scenes: one row per (model, scene)."""
    input:
        pretrained=checkpoint_path,
        trained="results/finetune/{run}/trained.pth",
        refined="results/finetune/{run}/refined.pth",
        scenes=eval_sources,
    output:
        "results/eval/{run}.csv",
    log:
        "results/logs/evaluate/{run}.log",
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
    student's on every benchmark scene, with seconds per pair of each."""
    input:
        pretrained=checkpoint_path,
        scenes=[s.source for s in SCENES.values()],
    output:
        "results/eval/teacher.csv",
    log:
        "results/logs/evaluate_teacher.log",
    params:
        scenes=list(SCENES.values()),
        student=EVAL,
        teacher=TEACHER.without_budget(),
    threads: res("evaluate", "threads")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        # The teacher's passes (upsampled, more iterations, mirrored) dominate the time.
        runtime=res("teacher", "runtime"),
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
    output:
        "results/eval/label_quality.csv",
    log:
        "results/logs/label_quality.log",
    params:
        scenes=list(SCENES.values()),
        speed_bins=LABELS.speed_bins,
    threads: 1
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/label_quality.py"
