rule labels:
    """The sparse pseudo-label store of one video: the teacher's flow of the pairs in its label
    budget, cycle-verified in the same job from memory, and that flow as a store beside it; in
    the paper's self-labelling (teacher == student) the student's own flow store, verified."""
    input:
        unpack(label_inputs),
    output:
        labels=directory("results/labels/flow/{video}.zarr"),
        **TEACHER_OUTPUT,
    log:
        "results/logs/labels/{video}.log",
    benchmark:
        "results/benchmarks/labels/{video}.tsv"
    params:
        settings=LABELS,
        teacher=TEACHER,
        sha256=config["model"]["sha256"],
    # Labelling runs the teacher's model unless the teacher is the student.
    threads: res(LABEL_JOB, "threads")
    resources:
        mem_mb=res(LABEL_JOB, "mem_mb"),
        runtime=res(LABEL_JOB, "runtime"),
        gpu=res(LABEL_JOB, "gpu"),
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
