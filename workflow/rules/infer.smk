# `snakemake infer`: apply a model (infer.checkpoint) to the sample videos with no labels and no
# fine-tuning. A model refined on some clips can be worse on others, so each clip is checked
# first: the teacher labels a few of its pairs (infer.check_pairs), and the guard's per-video
# rule compares the model with the pretrained one there. The clip gets the model only where the
# check favours it. Results: results/infer/{video}/, laid out as results/deliverables/{video}/.


rule infer:
    """Deliverables of every sample video from the model named by infer.checkpoint (a target)."""
    input:
        expand("results/infer/{video}", video=SAMPLES.index),


rule infer_labels:
    """The teacher's verified labels on a few pairs of one clip: what the clip check scores against."""
    input:
        frames="results/frames/{video}.zarr",
        checkpoint=checkpoint_path,
    output:
        labels=directory("results/labels/check/{video}.zarr"),
    log:
        "results/logs/infer_labels/{video}.log",
    benchmark:
        "results/benchmarks/infer_labels/{video}.tsv"
    params:
        settings=LABELS,
        teacher=TEACHER._replace(pair_stride=1, max_pairs=config["infer"]["check_pairs"]),
        sha256=config["model"]["sha256"],
    threads: res("teacher", "threads")
    resources:
        mem_mb=res("teacher", "mem_mb"),
        runtime=res("teacher", "runtime"),
        gpu=res("teacher", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/labels.py"


rule infer_check:
    """The clip check: the candidate model against the pretrained one on the teacher's labels of
    the clip, by the guard's per-video rule (a bootstrap interval over label blocks)."""
    input:
        frames="results/frames/{video}.zarr",
        labels="results/labels/check/{video}.zarr",
        pretrained=checkpoint_path,
        candidate=infer_checkpoint,
    output:
        "results/checks/{video}.json",
    log:
        "results/logs/infer_check/{video}.log",
    benchmark:
        "results/benchmarks/infer_check/{video}.tsv"
    params:
        settings=GUARD,
        sha256=config["model"]["sha256"],
    threads: res("guard", "threads")
    resources:
        mem_mb=res("guard", "mem_mb"),
        runtime=res("guard", "runtime"),
        gpu=res("guard", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/infer_check.py"


rule infer_tracks:
    """Tracks of one clip with infer.tracker on the RAFT-small it was trained with."""
    input:
        frames="results/frames/{video}.zarr",
        checkpoint=lambda wc: str(mrconfig.infer_tracker(config, PROJECT_ROOT)),
        rafts=lambda wc: [checkpoint_path(wc), infer_checkpoint(wc)],
        queries=lambda wc: sample(wc)["queries"] or [],
    output:
        directory("results/tracking/infer/{video}.zarr"),
    log:
        "results/logs/infer_tracks/{video}.log",
    benchmark:
        "results/benchmarks/infer_tracks/{video}.tsv"
    wildcard_constraints:
        video=SAMPLE_PATTERN,
    params:
        size=config["tracking"]["size"],
        iters=config["tracking"]["iters"],
        label_options=TRACK_GRID,
        grid_size=config["deliverables"]["grid_size"],
        max_pixels=config["tracking"].get("max_pixels"),
    threads: res("track_predict", "threads")
    resources:
        mem_mb=res("track_predict", "mem_mb"),
        runtime=res("track_predict", "runtime"),
        gpu=res("track_predict", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/track_predict.py"


rule inferred_flow:
    """One clip's flow from the applied weights, or the pretrained ones where its check does not
    favour them (only the chosen model runs)."""
    input:
        unpack(infer_inputs),
    output:
        directory("results/flow/inferred/{video}.zarr"),
    log:
        "results/logs/inferred_flow/{video}.log",
    benchmark:
        "results/benchmarks/inferred_flow/{video}.tsv"
    wildcard_constraints:
        video=SAMPLE_PATTERN,
    params:
        settings=FLOW,
        sha256=config["model"]["sha256"],
    threads: res("flow", "threads")
    resources:
        mem_mb=res("flow", "mem_mb"),
        runtime=res("flow", "runtime"),
        gpu=res("flow", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/delivered_flow.py"


rule infer_deliverable:
    """One clip's deliverables from its inferred flow."""
    input:
        unpack(lambda wc: {
            "frames": f"results/frames/{wc.video}.zarr",
            "flow": f"results/flow/inferred/{wc.video}.zarr",
            **({"tracks": f"results/tracking/infer/{wc.video}.zarr"} if INFER_TRACKS else {}),
        }),
    output:
        directory("results/infer/{video}"),
    log:
        "results/logs/infer_deliverable/{video}.log",
    benchmark:
        "results/benchmarks/infer_deliverable/{video}.tsv"
    wildcard_constraints:
        video=SAMPLE_PATTERN,
    params:
        settings=DELIVERY,
        queries=lambda wc: sample(wc)["queries"],
    threads: 1
    resources:
        mem_mb=res("deliverable", "mem_mb"),
        runtime=res("deliverable", "runtime"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/deliverable.py"
