# Config and sample sheet, checked once at parse time; the logic is in motionrefine/config/.
import os
import re
from pathlib import Path

from motionrefine.config import schema as mrconfig
from motionrefine.config import plan
from motionrefine.config import settings as mrsettings

mrconfig.validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))
# Relative config paths resolve against the project root (the Snakefile's folder), not the working directory.
PROJECT_ROOT = workflow.basedir
mrconfig.export_project_root(PROJECT_ROOT)  # where envs/motionrefine.yaml installs the package from
ASSET_ROOT = mrconfig.asset_root(config, PROJECT_ROOT)
SAMPLES = mrconfig.load_samples(config, PROJECT_ROOT, workflow.source_path("../schemas/samples.schema.yaml"))
MODEL = config["model"]["name"]
plan.check_names(list(SAMPLES.index), config)
SCENES = {s.video: s for s in plan.flow_scenes(config, ASSET_ROOT)}
# Real-texture benchmarks' sources: sample videos' frames stores, or outside files decoded for them.
TEXTURES = plan.texture_sources(config, list(SAMPLES.index), ASSET_ROOT)
TEXTURE_PATHS = {t.store: t.path for ts in TEXTURES.values() for t in ts if t.path}
# Point-tracking benchmarks (TAP-Vid): scored by the tracking comparison only.
TRACK_SCENES = [s for s in plan.benchmark_scenes(config, ASSET_ROOT) if s.kind in plan.TRACK_KINDS]
TRACK_SCENE_VIDEOS = {s.video: s for s in TRACK_SCENES}
RUNS = plan.runs(config, list(SAMPLES.index), ASSET_ROOT)
# Flow refined on each TAP-Vid video's own frames, for the tracking comparison (no flow evaluation).
TRACK_RUNS = plan.track_runs(config, ASSET_ROOT) if config["tracking"].get("enabled") else {}
ALL_RUNS = {**RUNS, **TRACK_RUNS}  # every fine-tune; RUNS are those the flow evaluation and report cover
# Scene, by its name in the tracking comparison (a generated scene's store stem, "{benchmark}/{video}"
# for TAP-Vid) -> the RAFT-small refined on that scene's own frames (its transductive run, guarded):
# chained RAFT and the tracker run on it there, the paper's per-video protocol.
GENERATED_SCENES = [v for v, s in SCENES.items() if s.kind in plan.GENERATED_KINDS]
# Their names in the tracking comparison (track_eval names them from the same list of stores).
TRACK_NAMES = dict(zip(GENERATED_SCENES, plan.track_scene_names([SCENES[v].source for v in GENERATED_SCENES])))
TRACK_TRANSDUCTIVE = {
    **{TRACK_NAMES[v]: f"results/finetune/{v}/refined.pth" for v in GENERATED_SCENES if v in RUNS},
    **{f"{s.benchmark}/{s.name}": f"results/finetune/{s.video}/refined.pth" for s in TRACK_SCENES
       if s.video in TRACK_RUNS},
}
FINETUNE = plan.finetune_settings(config)
# Each stage's settings, one param of its rule (motionrefine/config/settings.py).
SETTINGS = mrsettings.build(config)
FLOW, LABELS, EVAL = SETTINGS.flow, SETTINGS.labels, SETTINGS.evaluate
TEACHER, GUARD = SETTINGS.teacher, SETTINGS.guard
TRACK_LABELS, TRACK_EVAL = SETTINGS.track_labels, SETTINGS.track_eval
DELIVERY = SETTINGS.delivery
# The frames rule decodes sample-sheet videos only; benchmark scenes have their own rule.
SAMPLE_PATTERN = "|".join(re.escape(n) for n in SAMPLES.index) or "(?!)"
RUN_PATTERN = "|".join(re.escape(r) for r in ALL_RUNS) or "(?!)"
# results/flow/{model}/...: the pretrained model's name, or refined-{run} for a refined one.
FLOW_MODEL_PATTERN = "|".join([re.escape(MODEL)] + [f"refined-{re.escape(r)}" for r in RUNS])


wildcard_constraints:
    video="[A-Za-z0-9_-]+",
    model="[A-Za-z0-9_.-]+",
    run=RUN_PATTERN,


# Memory and time limits grow with each retry (`retries` in profiles/slurm): a job killed for
# exceeding them is resubmitted with twice, three times ... the configured value.
SCALED_RESOURCES = ("mem_mb", "runtime")


def res(rule, key):
    """Scheduling value ``key`` of ``rule`` from config resources (rule entry over default);
    mem_mb and runtime as a callable of the attempt (1 on the first try)."""
    value = mrconfig.rule_resources(config, rule)[key]
    # gpu 0 -> None, which Snakemake drops: CPU jobs carry no gpu resource at all, so the
    # SLURM executor adds no --gpus and a profile's set-resources can still add one.
    if key == "gpu" and not value:
        return None
    if key in SCALED_RESOURCES:
        return lambda wildcards, attempt: value * attempt
    return value


def sample(wildcards):
    return SAMPLES.loc[wildcards.video]


def checkpoint_path(wildcards):
    # Resolved lazily: a missing checkpoint only stops runs that need flow.
    return str(mrconfig.model_checkpoint(config, PROJECT_ROOT))


def infer_checkpoint(wildcards):
    return str(mrconfig.infer_checkpoint(config, PROJECT_ROOT))


def tracker_checkpoint(wildcards):
    return str(mrconfig.tracker_checkpoint(config, PROJECT_ROOT))


def tracker_raft(wildcards):
    """The frozen RAFT-small a FlowPips tracker runs on (its file stores only the tracker's own weights)."""
    if config["tracking"]["size"] != "flow-small":
        return []
    return str(mrconfig.tracker_raft_checkpoint(config, PROJECT_ROOT))


def tracker_backbone(wildcards):
    """RAFT-small weights put under the tracker before its fine-tuning: the heldout flow
    refinement's (tracking.refined_raft), so the refined tracker's flow and features are refined too."""
    if config["tracking"]["size"] != "flow-small" or not config["tracking"].get("refined_raft", True) \
            or config["model"]["variant"] != "small":
        return []
    return f"results/finetune/{plan.HELDOUT}/refined.pth"


def tracker_refined_raft(wildcards):
    """The RAFT-small the refined tracker runs on."""
    return tracker_backbone(wildcards) or tracker_raft(wildcards)


def tracking_enabled():
    """Tracking runs when enabled and there is a heldout flow run and a generated scene to score on."""
    return bool(config["tracking"].get("enabled")) and plan.HELDOUT in RUNS and (
        any(s.kind in plan.GENERATED_KINDS for s in SCENES.values()) or bool(TRACK_SCENES)
    )


SELF_LABELLING = TEACHER.is_student(config["model"]["iters"])
# The labels job runs the teacher model (its resources), or only verifies the student's flow.
LABEL_JOB = "labels" if SELF_LABELLING else "teacher"


# The labels job also writes the teacher's flow (results/teacher/{video}.zarr) from memory: the
# tracker's chained-teacher labels and the teacher's evaluation read it.
TEACHER_OUTPUT = {} if SELF_LABELLING else {"teacher": directory("results/teacher/{video}.zarr")}


def label_flow(wildcards):
    """The flow the labels were verified from: the teacher's store, or the student's own store
    when the teacher is the student."""
    if SELF_LABELLING:
        return f"results/flow/{MODEL}/{wildcards.video}.zarr"
    return f"results/teacher/{wildcards.video}.zarr"


def label_inputs(wildcards):
    """The labels' inputs: frames and the checkpoint the teacher runs, or, when the teacher is
    the student, frames and the student's own flow store."""
    frames = f"results/frames/{wildcards.video}.zarr"
    if SELF_LABELLING:
        return {"frames": frames, "flow": f"results/flow/{MODEL}/{wildcards.video}.zarr"}
    return {"frames": frames, "checkpoint": checkpoint_path(wildcards)}


def flow_checkpoint(wildcards):
    if wildcards.model == MODEL:
        return checkpoint_path(wildcards)
    return f"results/finetune/{wildcards.model.removeprefix('refined-')}/refined.pth"


def scene(wildcards):
    video = f"{wildcards.bench}{plan.SCENE_SEP}{wildcards.scene}"
    return SCENES[video] if video in SCENES else TRACK_SCENE_VIDEOS[video]


def scene_source(wildcards):
    return scene(wildcards).source


def eval_scenes(wildcards):
    return RUNS[wildcards.run]["eval"]


def eval_sources(wildcards):
    return [s.source for s in eval_scenes(wildcards)]


def run_finetune(wildcards):
    """The fine-tuning settings of one run: the config's, with the run's own seed (seed repeats)."""
    return {**FINETUNE, "seed": ALL_RUNS[wildcards.run]["seed"]}


def run_videos(wildcards):
    return ALL_RUNS[wildcards.run]["train"]


def all_targets():
    targets = expand("results/frames/{video}.zarr", video=SAMPLES.index)
    targets += expand("results/labels/flow/{video}.zarr", video=SAMPLES.index)
    # What the user takes away: per video flow, tracks, preview and meta; the refined model.
    targets += expand("results/deliverables/{video}", video=SAMPLES.index)
    if plan.HELDOUT in RUNS:
        targets += ["results/model/model.json"]
    if RUNS:
        targets += ["results/report/index.html"]
    if tracking_enabled():
        targets += ["results/tracking/eval.csv"]
    return targets


# Deliverables (deliverables.smk): the refined model comes from the heldout run, when there is one.
REFINED_RUN = plan.HELDOUT if plan.HELDOUT in RUNS else None


def delivery_inputs(wildcards):
    """What decides a sample video's delivered flow: the pretrained weights and, with a refined run,
    the refined weights and their guard verdict."""
    inputs = {"frames": f"results/frames/{wildcards.video}.zarr", "pretrained": checkpoint_path(wildcards)}
    if REFINED_RUN:
        inputs["refined"] = f"results/finetune/{REFINED_RUN}/refined.pth"
        inputs["verdict"] = f"results/finetune/{REFINED_RUN}/guard.json"
    return inputs


# `snakemake infer`: the default (model.checkpoint) is the pretrained model itself, nothing to check.
INFER_CHECKS = config["infer"]["checkpoint"] not in (None, config["model"]["checkpoint"])
INFER_TRACKS = bool(config["tracking"].get("enabled"))


def infer_inputs(wildcards):
    """The same for `snakemake infer`: the applied weights and the clip check's verdict."""
    inputs = {"frames": f"results/frames/{wildcards.video}.zarr", "pretrained": checkpoint_path(wildcards)}
    if INFER_CHECKS:
        inputs["refined"] = infer_checkpoint(wildcards)
        inputs["verdict"] = f"results/checks/{wildcards.video}.json"
    return inputs


# The query grid of the tracks a user gets (track_predict, infer_tracks): the pseudo-labels' grid
# settings; `teachers` names label stores, not a grid setting.
TRACK_GRID = {k: v for k, v in (config["tracking"].get("labels") or {}).items() if k != "teachers"}


def delivered_tracks(wildcards):
    return {"tracks": f"results/tracking/predict/{wildcards.video}.zarr"} if tracking_enabled() else {}


# The refined tracker's outputs, when the run refines it.
MODEL_TRACKER = ({"tracker": "results/model/tracker.pth", "tracker_guard": "results/model/tracker-guard.json"}
                 if tracking_enabled() else {})


# Where each kind of exported tracks comes from.
TRACK_SOURCES = {"labels": "results/labels/tracks/{video}.zarr", "predicted": "results/tracking/predict/{video}.zarr"}
TRACK_SUFFIX = {"csv": "csv", "tapvid": "pkl"}


def export_targets():
    # The deliverable model: refined on the sample videos when there is a heldout run.
    model = f"refined-{plan.HELDOUT}" if plan.HELDOUT in RUNS else MODEL
    targets = expand("results/export/{model}/{video}.{fmt}", model=model, video=SAMPLES.index,
                     fmt=config["export"]["flow"])
    # Tracks exist only where the tracker is refined (tracking.enabled and a heldout run).
    if tracking_enabled():
        for fmt in config["export"]["tracks"]:
            targets += expand("results/export/tracks/{source}/{video}.{suffix}", source=list(TRACK_SOURCES),
                              video=SAMPLES.index, suffix=TRACK_SUFFIX[fmt])
    return targets
