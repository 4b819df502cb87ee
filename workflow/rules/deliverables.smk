# What a user takes away from a run on their footage (motionrefine/deliver/): per sample video,
# results/deliverables/{video}/ (flow, tracks, preview.mp4, meta.json), and the refined model
# with its guard verdicts in results/model/. Names carry no protocol word: the deliverable model
# is the one refined on the sample videos (the heldout run), judged per video by its guard.

rule model:
    """The refined model: the guarded RAFT-small refined on the sample videos (the guard's pooled
    choice) and its verdicts, with the refined tracker when tracking runs; model.json says what
    each file is and how to apply it to new clips (`snakemake infer`)."""
    input:
        raft=f"results/finetune/{REFINED_RUN}/refined.pth",
        guard=f"results/finetune/{REFINED_RUN}/guard.json",
        **({"tracker": "results/tracking/finetune/refined.pth", "tracker_guard": "results/tracking/finetune/guard.json"}
           if tracking_enabled() else {}),
    output:
        raft="results/model/raft.pth",
        guard="results/model/guard.json",
        manifest="results/model/model.json",
        **MODEL_TRACKER,
    log:
        "results/logs/model/model.log",
    benchmark:
        "results/benchmarks/model/model.tsv"
    params:
        variant=config["model"]["variant"],
        iters=config["model"]["iters"],
    threads: 1
    resources:
        mem_mb=res("model", "mem_mb"),
        runtime=res("model", "runtime"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/model.py"


rule delivered_flow:
    """One sample video's flow from the weights its guard verdict hands it: the refined weights
    only where its check favours them, else the pretrained ones (only the chosen model runs)."""
    input:
        unpack(delivery_inputs),
    output:
        directory("results/flow/delivered/{video}.zarr"),
    log:
        "results/logs/delivered_flow/{video}.log",
    benchmark:
        "results/benchmarks/delivered_flow/{video}.tsv"
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


rule deliverable:
    """One sample video's deliverables: its delivered flow, the refined tracker's tracks (at the
    sheet's query points or a grid), preview.mp4 and meta.json."""
    input:
        unpack(lambda wc: {"frames": f"results/frames/{wc.video}.zarr",
                           "flow": f"results/flow/delivered/{wc.video}.zarr", **delivered_tracks(wc)}),
    output:
        directory("results/deliverables/{video}"),
    log:
        "results/logs/deliverable/{video}.log",
    benchmark:
        "results/benchmarks/deliverable/{video}.tsv"
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
