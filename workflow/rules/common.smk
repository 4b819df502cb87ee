# Config and sample sheet, checked once at parse time; the logic is in motionrefine/config/schema.py.
import os
import re
from pathlib import Path

from motionrefine.config import schema as mrconfig
from motionrefine.config import plan

mrconfig.validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))
SAMPLES = mrconfig.load_samples(config)
MODEL = config["model"]["name"]
plan.check_names(list(SAMPLES.index), config)
SCENES = {s.video: s for s in plan.flow_scenes(config)}
# Point-tracking benchmarks (TAP-Vid): scored by the tracking comparison only.
TRACK_SCENES = [s for s in plan.benchmark_scenes(config) if s.kind in plan.TRACK_KINDS]
RUNS = plan.runs(config, list(SAMPLES.index))
FINETUNE = plan.finetune_settings(config)
# The frames rule decodes sample-sheet videos only; benchmark scenes have their own rule.
SAMPLE_PATTERN = "|".join(re.escape(n) for n in SAMPLES.index) or "(?!)"
RUN_PATTERN = "|".join(re.escape(r) for r in RUNS) or "(?!)"
# results/flow/{model}/...: the pretrained model's name, or refined-{run} for a refined one.
FLOW_MODEL_PATTERN = "|".join([re.escape(MODEL)] + [f"refined-{re.escape(r)}" for r in RUNS])


wildcard_constraints:
    video="[A-Za-z0-9_-]+",
    model="[A-Za-z0-9_.-]+",
    run=RUN_PATTERN,


def res(rule, key):
    """Scheduling value ``key`` of ``rule`` from config resources (rule entry over default)."""
    value = mrconfig.rule_resources(config, rule)[key]
    # gpu 0 -> None, which Snakemake drops: CPU jobs carry no gpu resource at all, so the
    # SLURM executor adds no --gpus and a profile's set-resources can still add one.
    if key == "gpu" and not value:
        return None
    return value


def sample(wildcards):
    return SAMPLES.loc[wildcards.video]


def checkpoint_path(wildcards):
    # Resolved lazily: a missing checkpoint only stops runs that need flow.
    return str(mrconfig.model_checkpoint(config))


def tracker_checkpoint(wildcards):
    value = config["tracking"].get("checkpoint")
    if not value:
        raise mrconfig.ConfigError("config key 'tracking.checkpoint' is not set (the tracker weights)")
    path = Path(value) if Path(value).is_absolute() else mrconfig.PROJECT_ROOT / value
    if not path.is_file():
        raise mrconfig.ConfigError(f"config key 'tracking.checkpoint': tracker weights not found at {path}")
    return str(path)


def tracking_enabled():
    """Tracking runs when enabled and there is a heldout flow run and a generated scene to score on."""
    return bool(config["tracking"].get("enabled")) and plan.HELDOUT in RUNS and (
        any(s.kind in plan.GENERATED_KINDS for s in SCENES.values()) or bool(TRACK_SCENES)
    )


def flow_checkpoint(wildcards):
    if wildcards.model == MODEL:
        return checkpoint_path(wildcards)
    return f"results/finetune/{wildcards.model.removeprefix('refined-')}/refined.pth"


def scene(wildcards):
    return SCENES[f"{wildcards.bench}{plan.SCENE_SEP}{wildcards.scene}"]


def scene_source_of(s):
    """Generated scenes come from results/benchmarks; dataset scenes from their root folder."""
    if s.kind in plan.GENERATED_KINDS:
        return f"results/benchmarks/{s.benchmark}/{s.name}.zarr"
    return str(mrconfig.asset_root(config) / config["benchmarks"][s.benchmark]["path"])


def scene_source(wildcards):
    return scene_source_of(scene(wildcards))


def eval_sources(wildcards):
    return [scene_source_of(s) for s in RUNS[wildcards.run]["eval"]]


def run_videos(wildcards):
    return RUNS[wildcards.run]["train"]


def all_targets():
    targets = expand("results/frames/{video}.zarr", video=SAMPLES.index) + expand(
        "results/flow/{model}/{video}.zarr", model=MODEL, video=SAMPLES.index
    )
    targets += expand("results/labels/flow/{video}.zarr", video=SAMPLES.index)
    if RUNS:
        targets += ["results/report/index.html"]
    if tracking_enabled():
        targets += ["results/tracking/eval.csv"]
    return targets
