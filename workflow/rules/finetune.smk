rule finetune:
    """Fine-tune the pretrained model to reproduce one run's verified labels (resumable); with
    more than one GPU in resources (or finetune.processes), as that many DDP ranks."""
    input:
        train="results/train/{run}.json",
        checkpoint=checkpoint_path,
    output:
        weights="results/finetune/{run}/trained.pth",
        loss="results/finetune/{run}/loss.tsv",
    log:
        "results/logs/finetune/{run}.log",
    benchmark:
        "results/benchmarks/finetune/{run}.tsv"
    params:
        settings=run_finetune,
        sha256=config["model"]["sha256"],
        workdir=lambda wc: f"results/finetune/{wc.run}",
    threads: res("finetune", "threads")
    resources:
        mem_mb=res("finetune", "mem_mb"),
        runtime=res("finetune", "runtime"),
        gpu=res("finetune", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/finetune.py"


rule guard:
    """Keep the fine-tuned weights only if they beat the pretrained ones on held-back label pixels
    (guard.enabled false: keep them unjudged)."""
    input:
        trained="results/finetune/{run}/trained.pth",
        pretrained=checkpoint_path,
        train="results/train/{run}.json",
    output:
        weights="results/finetune/{run}/refined.pth",
        verdict="results/finetune/{run}/guard.json",
    log:
        "results/logs/guard/{run}.log",
    benchmark:
        "results/benchmarks/guard/{run}.tsv"
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
        "../scripts/guard.py"
