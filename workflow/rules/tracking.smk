rule track_labels:
    """Forward-backward verified, densified, speed-filtered tracks of one video (tracker pseudo-labels)."""
    input:
        frames="results/frames/{video}.zarr",
        checkpoint=tracker_checkpoint,
    output:
        directory("results/labels/tracks/{video}.zarr"),
    log:
        "results/logs/track_labels/{video}.log",
    benchmark:
        "results/benchmarks/track_labels/{video}.tsv"
    params:
        settings=TRACK_LABELS,
    threads: res("track_labels", "threads")
    resources:
        mem_mb=res("track_labels", "mem_mb"),
        runtime=res("track_labels", "runtime"),
        gpu=res("track_labels", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/track_labels.py"


rule track_finetune:
    """Fine-tune the tracker to reproduce the verified tracks of the sample videos (resumable)."""
    input:
        labels=expand("results/labels/tracks/{video}.zarr", video=SAMPLES.index),
        frames=expand("results/frames/{video}.zarr", video=SAMPLES.index),
        checkpoint=tracker_checkpoint,
    output:
        weights="results/tracking/finetune/refined.pth",
        loss="results/tracking/finetune/loss.tsv",
    log:
        "results/logs/track_finetune.log",
    benchmark:
        "results/benchmarks/track_finetune/track_finetune.tsv"
    params:
        settings=lambda wc: dict(config["tracking"]["finetune"], size=config["tracking"]["size"]),
        sha256=config["tracking"].get("sha256"),
        workdir=lambda wc, output: os.path.dirname(output.weights),
    threads: res("track_finetune", "threads")
    resources:
        mem_mb=res("track_finetune", "mem_mb"),
        runtime=res("track_finetune", "runtime"),
        gpu=res("track_finetune", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/track_finetune.py"


rule track_eval:
    """Long-range tracks on the real-texture scenes: chained RAFT before/after flow refinement,
    the pre-trained and the refined tracker. TAP-Vid metrics plus survival and MTE per scene."""
    input:
        scenes=[s.source for s in SCENES.values() if s.kind in plan.GENERATED_KINDS],
        tapvid=sorted({s.source for s in TRACK_SCENES}),
        raft_pretrained=checkpoint_path,
        raft_refined=f"results/finetune/{plan.HELDOUT}/refined.pth",
        tracker_pretrained=tracker_checkpoint,
        tracker_refined="results/tracking/finetune/refined.pth",
    output:
        table=report("results/tracking/eval.csv", caption="../report/tracking_table.rst", category="Tracking"),
        figure=report("results/tracking/delta_avg.png", caption="../report/tracking.rst", category="Tracking"),
        summary="results/tracking/summary.md",
    log:
        "results/logs/track_eval.log",
    benchmark:
        "results/benchmarks/track_eval/track_eval.tsv"
    params:
        settings=TRACK_EVAL,
        tapvid=TRACK_SCENES,
    threads: res("track_eval", "threads")
    resources:
        mem_mb=res("track_eval", "mem_mb"),
        runtime=res("track_eval", "runtime"),
        gpu=res("track_eval", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/track_eval.py"
