# The paper's comparison (`snakemake ablation`, not in `all`): the recipe, its ablations and the
# self-supervised baselines, each fine-tuned from the same weights on the same videos with the
# same steps and schedule, `ablation.seeds` times. Plan: motionrefine/config/ablation.py; table
# and figure: motionrefine/report/ablation.py. The label, aggregate, finetune and evaluate
# scripts are the main chain's, with other params and paths.
from motionrefine.config import ablation as mrablation

ABL_VARIANTS = mrablation.variants(config)
ABL_RUNS = mrablation.runs(config, list(SAMPLES.index))
ABL_SEEDS = mrablation.seeds(config)
ABL_VARIANT_PATTERN = "|".join(re.escape(v) for v in ABL_VARIANTS)
ABL_PRESETS = mrablation.label_presets(config)
ABL_LABELLER_PATTERN = "|".join(sorted({re.escape(l) for l, _ in ABL_PRESETS}))
ABL_CHECKS_PATTERN = "|".join(sorted({re.escape(c) for _, c in ABL_PRESETS}))
# Fine-tune folder below results/ablation/finetune/ -> (variant's switches, run, seed index),
# for every planned fine-tune.
ABL_FITS = {mrablation.finetune_name(v, r, i): (ABL_VARIANTS[v], r, i)
            for r in ABL_RUNS for v in ABL_VARIANTS for i in ABL_SEEDS}


rule ablation:
    """Every variant's before/after evaluation -> one table (csv + markdown) and one figure."""
    input:
        # Planned here, not at parse time: configs that never ask for the ablation need not plan one.
        evals=lambda wc: [e[3] for e in mrablation.evaluations(config, list(SAMPLES.index))],
    output:
        table=report("results/ablation/table.csv", caption="../report/ablation.rst", category="Ablation"),
        markdown="results/ablation/table.md",
        figure=report("results/ablation/figure.png", caption="../report/ablation_figure.rst", category="Ablation"),
    log:
        "results/logs/ablation/table.log",
    benchmark:
        "results/benchmarks/ablation/table.tsv"
    params:
        # (variant, run, seed) of each evaluation, in the order of input.evals.
        evaluated=lambda wc: [e[:3] for e in mrablation.evaluations(config, list(SAMPLES.index))],
        specs=ABL_VARIANTS,
        settings=FINETUNE,
    threads: 1
    resources:
        mem_mb=res("ablation", "mem_mb"),
        runtime=res("ablation", "runtime"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/ablation_table.py"


rule ablation_labels:
    """Labels of one video under another (labeller, checks) preset: the teacher's flow or the
    student's own (self-labelling, with the paper's thresholds), verified by the preset's checks
    (the main chain's labels are reused for its own preset)."""
    input:
        frames="results/frames/{video}.zarr",
        flow=lambda wc: mrablation.labeller_flow(config, wc.labeller, wc.video),
    output:
        labels=directory("results/ablation/labels/{labeller}/{checks}/{video}.zarr"),
    log:
        "results/logs/ablation/labels/{labeller}/{checks}/{video}.log",
    benchmark:
        "results/benchmarks/ablation_labels/{labeller}/{checks}/{video}.tsv"
    wildcard_constraints:
        labeller=ABL_LABELLER_PATTERN,
        checks=ABL_CHECKS_PATTERN,
    params:
        settings=lambda wc: mrablation.label_settings(LABELS, wc.labeller, wc.checks),
    threads: res("labels", "threads")
    resources:
        mem_mb=res("labels", "mem_mb"),
        runtime=res("labels", "runtime"),
        gpu=res("labels", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/labels.py"


rule ablation_aggregate:
    """Training-set index of one ablation run's videos under one labels preset."""
    input:
        labels=lambda wc: [mrablation.label_store(config, wc.labeller, wc.checks, v) for v in ABL_RUNS[wc.arun]["train"]],
        frames=lambda wc: expand("results/frames/{video}.zarr", video=ABL_RUNS[wc.arun]["train"]),
    output:
        "results/ablation/train/{labeller}/{checks}/{arun}.json",
    log:
        "results/logs/ablation/aggregate/{labeller}/{checks}/{arun}.log",
    benchmark:
        "results/benchmarks/ablation_aggregate/{labeller}/{checks}/{arun}.tsv"
    wildcard_constraints:
        labeller=ABL_LABELLER_PATTERN,
        checks=ABL_CHECKS_PATTERN,
        arun="|".join(re.escape(r) for r in ABL_RUNS) or "(?!)",
    threads: 1
    resources:
        mem_mb=res("aggregate", "mem_mb"),
        runtime=res("aggregate", "runtime"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/aggregate.py"


rule ablation_finetune:
    """One variant's fine-tune with one seed, heldout (on the sample videos) or transductive (on
    one benchmark scene's own frames); the main finetune script: resumable, fingerprinted."""
    input:
        train=lambda wc: mrablation.train_index(*ABL_FITS[wc.fit][:2]),
        checkpoint=checkpoint_path,
    output:
        weights="results/ablation/finetune/{fit}/refined.pth",
        loss="results/ablation/finetune/{fit}/loss.tsv",
    log:
        "results/logs/ablation/finetune/{fit}.log",
    benchmark:
        "results/benchmarks/ablation_finetune/{fit}.tsv"
    # {fit}: variant/seed{i} for its heldout run, variant/scene/seed{i} for a transductive one.
    wildcard_constraints:
        fit="|".join(re.escape(f) for f in ABL_FITS) or "(?!)",
    params:
        settings=lambda wc: mrablation.variant_settings(config, ABL_FITS[wc.fit][0], ABL_FITS[wc.fit][2]),
        sha256=config["model"]["sha256"],
        workdir=lambda wc: f"results/ablation/finetune/{wc.fit}",
    threads: res("finetune", "threads")
    resources:
        mem_mb=res("finetune", "mem_mb"),
        runtime=res("finetune", "runtime"),
        gpu=res("finetune", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/finetune.py"


rule ablation_evaluate:
    """Pretrained ("before") and one variant's weights on its run's scenes (the main evaluate script)."""
    input:
        pretrained=checkpoint_path,
        refined=lambda wc: mrablation.refined_path(wc.variant, wc.run, int(wc.seed)),
        scenes=lambda wc: [SCENES[s.video].source for s in ABL_RUNS[wc.run]["eval"]],
    output:
        "results/ablation/eval/{run}/{variant}/seed{seed}.csv",
    log:
        "results/logs/ablation/evaluate/{run}/{variant}/seed{seed}.log",
    benchmark:
        "results/benchmarks/ablation_evaluate/{run}/{variant}/seed{seed}.tsv"
    # `run` is named so for the evaluate script (its CSV's run column); ablation runs, not RUNS.
    wildcard_constraints:
        run="|".join(re.escape(r) for r in ABL_RUNS) or "(?!)",
        variant=ABL_VARIANT_PATTERN,
        seed="|".join(str(i) for i in ABL_SEEDS),
    params:
        scenes=lambda wc: [SCENES[s.video] for s in ABL_RUNS[wc.run]["eval"]],
        # Without alternate_corr_pixels, as this rule always ran (evaluate's default: never on demand).
        settings=EVAL._replace(alternate_corr_pixels=None),
    threads: res("evaluate", "threads")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
        gpu=res("evaluate", "gpu"),
    conda:
        "../../envs/motionrefine.yaml"
    script:
        "../scripts/evaluate.py"
