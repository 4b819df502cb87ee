"""Typed settings of the workflow's stages, built once from the validated config.

A rule passes its stage's settings as one param (``params: settings=FLOW``) and the rule
script hands them to the library function (``flow_stage(..., **settings._asdict())``), so
the field names are the library's keyword names.

Each settings class is a NamedTuple: immutable, hashable, picklable (the script receives
the params pickled), with a repr that depends only on the values. The tuple matters:
Snakemake records a param (and reruns a job when it changes) only if it is a builtin type
such as tuple; a dataclass param would be silently left out of that comparison.
"""

from __future__ import annotations

from typing import Any, NamedTuple


def _frozen(value: Any) -> Any:
    """Lists (YAML sequences) as tuples and mappings as sorted pairs, so settings stay hashable."""
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


class FlowSettings(NamedTuple):
    """Rule flow: the frozen or refined RAFT over every frame pair (``inference.flow_stage``)."""

    variant: str
    iters: int
    batch_size: int
    alternate_corr_pixels: int | None

    def stage_kwargs(self) -> dict:
        return self._asdict()


class TeacherStageSettings(NamedTuple):
    """Rule teacher: the frozen model at the teacher's settings (``inference.flow_stage``)."""

    variant: str
    batch_size: int
    alternate_corr_pixels: int | None
    scales: tuple
    iters: int
    flip: bool
    max_pixels: int
    pair_stride: int = 1
    max_pairs: int = 0
    max_megapixels: float = 0.0

    def is_student(self, student_iters: int) -> bool:
        return self.teacher().is_student(student_iters)

    def without_budget(self) -> "TeacherStageSettings":
        """The teacher's views and iterations only: for rules that score the teacher on
        benchmark pairs (evaluate_teacher), which a change of the label budget must not rerun."""
        return self._replace(pair_stride=1, max_pairs=0, max_megapixels=0.0)

    def teacher(self):
        from motionrefine.flow.teacher import TeacherSettings

        return TeacherSettings(scales=tuple(self.scales), iters=self.iters, flip=self.flip, max_pixels=self.max_pixels,
                               pair_stride=self.pair_stride, max_pairs=self.max_pairs,
                               max_megapixels=float(self.max_megapixels))

    def stage_kwargs(self) -> dict:
        """``flow_stage`` keywords: the student's model settings and the teacher's views."""
        return {"variant": self.variant, "batch_size": self.batch_size,
                "alternate_corr_pixels": self.alternate_corr_pixels, "teacher": self.teacher()}


class GuardSettings(NamedTuple):
    """Rule guard (``guard.guard_weights``)."""

    enabled: bool
    variant: str
    iters: int
    margin: float
    holdout_block: int
    holdout_every: int
    bootstrap: int = 1000
    confidence: float = 0.95

    def rule(self):
        """The decision rule of the guard and of `snakemake infer`'s clip check (``flow.verdict.Rule``)."""
        from motionrefine.flow.verdict import Rule

        return Rule(margin=self.margin, resamples=self.bootstrap, confidence=self.confidence)


class LabelSettings(NamedTuple):
    """Rule labels: cycle verification of the frozen model's flow (``labels.make_flow_labels``)."""

    alpha: float
    beta: float
    colour: float
    max_flow: float
    checks: str
    speed_bins: tuple
    batch_size: int
    colour_norm: str = "raw"


class EvalSettings(NamedTuple):
    """Rule evaluate: the pretrained and refined RAFT on benchmark scenes (``evaluate.evaluate_flow``)."""

    variant: str
    iters: int
    alternate_corr_pixels: int | None


class TrackLabelSettings(NamedTuple):
    """Rule track_labels (``track.labels.make_track_labels``). ``options`` are the
    ``tracking.labels`` keys the config sets, as sorted pairs; the rest keep the library's defaults."""

    size: str
    expected_sha256: str | None
    options: tuple
    max_pixels: int | None = None  # tracking.max_pixels (track.resolution)

    def kwargs(self) -> dict:
        """Keyword arguments of make_track_labels (TrackLabelConfig fields)."""
        return {**dict(self.options), "size": self.size, "expected_sha256": self.expected_sha256,
                "max_pixels": self.max_pixels}


class TrackEvalSettings(NamedTuple):
    """Rule track_eval (``track.evaluate.tracker_comparison``). raft_fb_*: chained RAFT's
    forward-backward occlusion check (``tracking.raft_occlusion``)."""

    size: str
    iters: int
    raft_iters: int
    raft_variant: str
    raft_fb_alpha: float
    raft_fb_beta: float


class DeliverySettings(NamedTuple):
    """Rules deliverable and infer_deliverable (``deliver.package.write_deliverable``): config
    ``deliverables`` with the formats of ``export``."""

    resolution: str = "source"
    flow_formats: tuple = ("flo", "npy", "kitti-png")
    track_formats: tuple = ("csv", "tapvid")
    preview: bool = True


class Settings(NamedTuple):
    flow: FlowSettings
    teacher: TeacherStageSettings
    guard: GuardSettings
    labels: LabelSettings
    evaluate: EvalSettings
    track_labels: TrackLabelSettings
    track_eval: TrackEvalSettings
    delivery: DeliverySettings


def build(config: dict) -> Settings:
    """Every stage's settings from a config validated against workflow/schemas/config.schema.yaml
    (which filled the defaults)."""
    model, verify, tracking = config["model"], config["verify"], config["tracking"]
    teacher, guard = config["teacher"], config["guard"]
    return Settings(
        flow=FlowSettings(model["variant"], model["iters"], model["batch_size"], model["alternate_corr_pixels"]),
        teacher=TeacherStageSettings(model["variant"], model["batch_size"], model["alternate_corr_pixels"],
                                     tuple(float(x) for x in teacher["scales"]), teacher["iters"], teacher["flip"],
                                     teacher["max_pixels"], teacher["pair_stride"], teacher["max_pairs"],
                                     float(teacher["max_megapixels"])),
        guard=GuardSettings(guard["enabled"], model["variant"], model["iters"], guard["margin"], guard["holdout_block"],
                            guard["holdout_every"], guard["bootstrap"], float(guard["confidence"])),
        labels=LabelSettings(verify["alpha"], verify["beta"], verify["colour"], verify["max_flow"], verify["checks"],
                             _frozen(verify["speed_bins"]), model["batch_size"], verify.get("colour_norm", "raw")),
        evaluate=EvalSettings(model["variant"], model["iters"], model["alternate_corr_pixels"]),
        track_labels=TrackLabelSettings(tracking["size"], tracking.get("sha256"),
                                        _frozen(tracking.get("labels") or {}), tracking.get("max_pixels")),
        track_eval=TrackEvalSettings(tracking["size"], tracking["iters"], model["iters"], model["variant"],
                                     float(tracking["raft_occlusion"]["alpha"]), float(tracking["raft_occlusion"]["beta"])),
        delivery=DeliverySettings(config["deliverables"]["resolution"], tuple(config["export"]["flow"]),
                                  tuple(config["export"]["tracks"]), config["deliverables"]["preview"]),
    )
