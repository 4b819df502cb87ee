# `snakemake export` (not in `all`): the sample videos' results as files other tools read,
# in the formats config `export` lists (export_targets, common.smk). Flow: rule export_flow
# (flow.smk); tracks: below.
# Library: motionrefine/io/flow_formats.py, motionrefine/io/track_formats.py.

rule export:
    """Every export config `export` asks for (a target: runs nothing itself)."""
    input:
        export_targets(),


rule track_predict:
    """The refined tracker's tracks of one sample video: from the sheet's query points (each
    tracked forward and backward from its own frame), or a grid at the first frame."""
    input:
        frames="results/frames/{video}.zarr",
        checkpoint="results/tracking/finetune/refined.pth",
        raft=tracker_refined_raft,
        queries=lambda wc: sample(wc)["queries"] or [],
    output:
        directory("results/tracking/predict/{video}.zarr"),
    log:
        "results/logs/track_predict/{video}.log",
    benchmark:
        "results/benchmarks/track_predict/{video}.tsv"
    wildcard_constraints:
        video=SAMPLE_PATTERN,
    params:
        size=config["tracking"]["size"],
        iters=config["tracking"]["iters"],
        # The labels' grid (spacing, margin), so the exported points are the ones refined on.
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


rule export_tracks:
    """One video's pseudo-label or predicted tracks as CSV (track, frame, x, y, visible) or a TAP-Vid pickle."""
    input:
        tracks=lambda wc: TRACK_SOURCES[wc.source].format(video=wc.video),
        frames="results/frames/{video}.zarr",
    output:
        "results/export/tracks/{source}/{video}.{suffix}",
    log:
        "results/logs/export/tracks/{source}/{video}.{suffix}.log",
    benchmark:
        "results/benchmarks/export_tracks/{source}/{video}.{suffix}.tsv"
    wildcard_constraints:
        source="|".join(TRACK_SOURCES),
        suffix="csv|pkl",
    params:
        fmt=lambda wc: {s: f for f, s in TRACK_SUFFIX.items()}[wc.suffix],
    threads: 1
    resources:
        mem_mb=res("export_flow", "mem_mb"),
        runtime=res("export_flow", "runtime"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/export_tracks.py"
