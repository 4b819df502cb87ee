# motionrefine: refine pre-trained motion models on real, unlabelled video.
# Run:   snakemake --cores all            (default config.yaml)
# Other: snakemake --cores all --configfile my.yaml --directory my_run/
from snakemake.utils import min_version

min_version("9.0")


# Next to this Snakefile, so --directory elsewhere still finds it (--configfile overrides).
configfile: f"{workflow.basedir}/config.yaml"


# `snakemake --report results/report.zip` after a run: this description, then the report()
# outputs of the rules with their captions (workflow/report/).
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/frames.smk"
include: "workflow/rules/flow.smk"
include: "workflow/rules/labels.smk"
include: "workflow/rules/benchmarks.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/tracking.smk"
include: "workflow/rules/ablation.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/deliverables.smk"
include: "workflow/rules/infer.smk"


# Bookkeeping that reads a few small files and writes a table or an index: on a cluster it runs
# on the submitting host instead of waiting in the queue. Everything that runs a model (the
# report included: it re-runs the sample flows) stays a cluster job.
localrules:
    all,
    aggregate,
    ablation_aggregate,
    ablation,
    label_quality,
    export,
    model,


rule all:
    input:
        all_targets(),
    default_target: True


onsuccess:
    # Point the user at the before/after table when the run produced one.
    summary = Path("results/report/summary.md")
    if summary.exists():
        print(f"\nBefore/after table and report: {summary.resolve()} and {summary.with_name('index.html').resolve()}")
