rule finetune:
    """Fine-tune the pretrained model to reproduce one run's verified labels (resumable)."""
    input:
        train="results/train/{run}.json",
        checkpoint=checkpoint_path,
    output:
        weights="results/finetune/{run}/refined.pth",
        loss="results/finetune/{run}/loss.tsv",
    log:
        "results/logs/finetune/{run}.log",
    params:
        settings=FINETUNE,
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
