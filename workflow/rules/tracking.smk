from types import SimpleNamespace

# FlowPips (tracking.size flow-small) labels with the chained teacher flow too, unless the config leaves it out.
TRACK_FLOW_TEACHER = config["tracking"]["size"] == "flow-small" and "flow" in (
    (config["tracking"].get("labels") or {}).get("teachers") or ["tracker", "flow"])
# Generated scenes whose pseudo-labels are scored against their ground truth (flow-small only).
TRACK_LABEL_SCENES = [v for v, s in SCENES.items() if s.kind in plan.GENERATED_KINDS] if config["tracking"]["size"] == "flow-small" else []


rule track_labels:
    """Forward-backward verified, densified, speed-filtered tracks of one video (tracker pseudo-labels)."""
    input:
        frames="results/frames/{video}.zarr",
        checkpoint=tracker_checkpoint,
        raft=tracker_raft,
        # flow-small's "flow" teacher chains the label-maker's flow (the flow half makes it anyway)
        teacher_flow=lambda wc: label_flow(wc) if TRACK_FLOW_TEACHER else [],
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
        raft=tracker_raft,
        backbone=tracker_backbone,
    output:
        weights="results/tracking/finetune/refined.pth",
        loss="results/tracking/finetune/loss.tsv",
        guard="results/tracking/finetune/guard.json",
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
    """Long-range tracks on the real-texture scenes: chained RAFT and the tracker (named
    "chained RAFT + visibility": its update outputs zero positions), pre-trained and refined (heldout: on the sample videos; transductive: each scene's RAFT refined on its own
    frames). TAP-Vid metrics plus survival and MTE per scene."""
    input:
        scenes=[SCENES[v].source for v in GENERATED_SCENES],
        tapvid=sorted({s.source for s in TRACK_SCENES}),
        raft_pretrained=checkpoint_path,
        raft_refined=f"results/finetune/{plan.HELDOUT}/refined.pth",
        tracker_pretrained=tracker_checkpoint,
        tracker_refined="results/tracking/finetune/refined.pth",
        tracker_guard="results/tracking/finetune/guard.json",
        tracker_raft=tracker_raft,
        tracker_refined_raft=tracker_refined_raft,
        # transductive: per generated scene, the RAFT refined on its own frames (params.transductive names the scenes)
        raft_transductive=list(TRACK_TRANSDUCTIVE.values()),
        # pseudo-label quality per teacher on the generated scenes (flow-small only)
        teacher_flows=[label_flow(SimpleNamespace(video=v)) for v in TRACK_LABEL_SCENES],
    output:
        table=report("results/tracking/eval.csv", caption="../report/tracking_table.rst", category="Tracking"),
        figure=report("results/tracking/delta_avg.png", caption="../report/tracking.rst", category="Tracking"),
        summary="results/tracking/summary.md",
        tracks_figure="results/tracking/tracks.png",
        labels="results/tracking/label_quality.csv",
    log:
        "results/logs/track_eval.log",
    benchmark:
        "results/benchmarks/track_eval/track_eval.tsv"
    params:
        settings=TRACK_EVAL,
        tapvid=TRACK_SCENES,
        label_scenes=[SCENES[v].source for v in TRACK_LABEL_SCENES],
        transductive=list(TRACK_TRANSDUCTIVE),
        # the FlowPips tracker runs on RAFT-small only
        flowpips_transductive=config["tracking"]["size"] == "flow-small" and config["model"]["variant"] == "small",
        labels=TRACK_LABELS,
    threads: res("track_eval", "threads")
    resources:
        mem_mb=res("track_eval", "mem_mb"),
        runtime=res("track_eval", "runtime"),
        gpu=res("track_eval", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/track_eval.py"
