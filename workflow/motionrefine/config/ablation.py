"""The plan of the paper's comparison (`snakemake ablation`): the recipe against its
ablations and against naive self-supervised fine-tuning, on the same start weights, videos,
steps and schedule. Its table and figure: motionrefine/report/ablation.py.

A variant is the recipe (fine-tune on the teacher's pseudo-labels made with the
forward-backward and colour checks, with augmentation, no speed re-balancing) with some of
five switches changed: ``mode`` (labels | photometric | cycle), ``labeller`` (teacher: the
config's teacher; student: the paper's self-labelling, labels from the student's own flow),
``checks`` (none | fb | fb+colour), ``augment`` and ``rebalance``. Everything else (steps,
batch, crop, lr, schedule) is the ``finetune`` section's, so only the switch differs between
two rows. The ablation compares the fine-tuned weights themselves (no guard: it would hide
the differences it is meant to show by keeping the pretrained weights).

Seeds: ``ablation.seeds`` fine-tunes per variant and run, seed i = ``finetune.seed`` + i
(it seeds the batches, augmentation and shuffling); the table reports mean ± sd over them.

Protocols: ``heldout`` (train on the sample videos, evaluate on every benchmark scene;
one fine-tune per variant and seed) and optionally ``transductive`` (one per variant, seed
and scene on that scene's own frames, evaluated on it).
"""

from __future__ import annotations

from typing import Sequence

from motionrefine.core.errors import MotionRefineError
from motionrefine.config.plan import HELDOUT, finetune_settings, flow_scenes

TRANSDUCTIVE = "transductive"
SWITCHES = ("mode", "labeller", "checks", "augment", "rebalance")
LABELLERS = ("teacher", "student")
# The recipe every variant departs from (the paper's two-stage recipe as this project runs it).
RECIPE = {"mode": "labels", "labeller": "teacher", "checks": "fb+colour", "augment": True, "rebalance": False}
DEFAULT_SEED = 125  # finetune.seed's default
# Self-labelling is the paper's method, so its labels get the official code's verification
# constants (α 0.002, β 0.1 px, colour 0.005 on raw RGB in [0, 1]), not the β and colour this
# project tuned for its stronger teacher.
PAPER_VERIFY = {"alpha": 0.002, "beta": 0.1, "colour": 0.005, "colour_norm": "raw"}
DEFAULT_VARIANTS = {
    "recipe": {},
    "self-label": {"labeller": "student"},
    "no-verify": {"checks": "none"},
    "fb-only": {"checks": "fb"},
    "no-augment": {"augment": False},
    "rebalance": {"rebalance": True},
    "photometric": {"mode": "photometric"},
    "cycle": {"mode": "cycle"},
}


def section(config: dict) -> dict:
    return dict(config.get("ablation") or {})


def variants(config: dict) -> dict[str, dict]:
    """variant name -> its four switches (recipe values where the variant names none)."""
    specs = section(config).get("variants")
    if specs is None:
        specs = DEFAULT_VARIANTS
    out = {}
    for name, spec in specs.items():
        spec = dict(spec or {})
        unknown = set(spec) - set(SWITCHES)
        if unknown:
            raise MotionRefineError(f"config key 'ablation.variants.{name}': unknown switches {sorted(unknown)}; "
                                    f"expected some of {list(SWITCHES)}")
        out[name] = {**RECIPE, **spec}
    if not out:
        raise MotionRefineError("config key 'ablation.variants': name at least one variant")
    return out


def seed_count(config: dict) -> int:
    n = section(config).get("seeds", 3)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise MotionRefineError(f"config key 'ablation.seeds': a count >= 1, got {n!r}")
    return n


def seeds(config: dict) -> list[int]:
    """Seed indices 0..n−1 (seed i trains with finetune.seed + i)."""
    return list(range(seed_count(config)))


def variant_settings(config: dict, spec: dict, seed: int = 0) -> dict:
    """The fine-tuning settings of one variant and seed index: the `finetune` section's (steps,
    schedule...) with the variant's mode, augmentation and re-balancing switches and the seed
    finetune.seed + ``seed``."""
    s = finetune_settings(config)
    s["seed"] = int(s.get("seed", DEFAULT_SEED)) + int(seed)
    s["mode"] = spec["mode"]
    s["rebalance"] = bool(spec["rebalance"])
    s["augment"] = {**s["augment"], "no_aug": not spec["augment"]}
    # No guard judges an ablation variant, so none of its labels is held back for one.
    s["holdout_every"] = 0
    return s


def main_labeller(config: dict) -> str:
    """Who made the main chain's labels: 'student' when the configured teacher is the student
    itself (scales [1], model.iters, no flip), else 'teacher'."""
    from motionrefine.flow.teacher import TeacherSettings

    t = config.get("teacher") or {}
    teacher = TeacherSettings(**{k: tuple(float(x) for x in t[k]) if k == "scales" else t[k]
                                 for k in ("scales", "iters", "flip") if k in t})
    return "student" if teacher.is_student((config.get("model") or {}).get("iters", 12)) else "teacher"


def label_presets(config: dict) -> list[tuple[str, str]]:
    """The (labeller, checks) presets whose labels the variants train on (sorted, unique)."""
    return sorted({(v["labeller"], v["checks"]) for v in variants(config).values()})


def labeller_flow(config: dict, labeller: str, video: str) -> str:
    """The flow store a labeller's labels verify: the teacher's, or the student's own (also for
    'teacher' when the configured teacher is the student: there is no other teacher then)."""
    if labeller == "student" or main_labeller(config) == "student":
        model = (config.get("model") or {}).get("name", "raft-small")
        return f"results/flow/{model}/{video}.zarr"
    return f"results/teacher/{video}.zarr"


def label_settings(labels, labeller: str, checks: str):
    """A preset's verification settings (``config.settings.LabelSettings``): the config's with the
    preset's checks; the paper's constants for self-labelling (``PAPER_VERIFY``)."""
    return labels._replace(checks=checks, **(PAPER_VERIFY if labeller == "student" else {}))


def label_store(config: dict, labeller: str, checks: str, video: str) -> str:
    """The main chain's labels serve the 'teacher' preset of their checks (when the configured
    teacher is the student, 'teacher' names that same flow and thresholds); self-labelling
    verifies with the paper's constants, so its stores are always its own."""
    if labeller == "teacher" and checks == (config.get("verify") or {}).get("checks", "fb+colour"):
        return f"results/labels/flow/{video}.zarr"
    return f"results/ablation/labels/{labeller}/{checks}/{video}.zarr"


def protocols(config: dict) -> list[str]:
    sec = section(config)
    out = [HELDOUT] if sec.get("heldout", True) else []
    if sec.get("transductive", False):
        out.append(TRANSDUCTIVE)
    return out


def runs(config: dict, samples: Sequence[str]) -> dict[str, dict]:
    """Ablation run -> {'protocol', 'train': [videos], 'eval': [Scene]}: 'heldout' trains on the
    samples and evaluates on every flow scene; each scene's own run (transductive) on itself.
    Empty when there is nothing to evaluate (see :func:`check_runs`)."""
    scenes = flow_scenes(config)
    out: dict[str, dict] = {}
    if not scenes:
        return out
    protos = protocols(config)
    if HELDOUT in protos and samples:
        out[HELDOUT] = {"protocol": HELDOUT, "train": list(samples), "eval": scenes}
    if TRANSDUCTIVE in protos:
        for s in scenes:
            out[s.video] = {"protocol": TRANSDUCTIVE, "train": [s.video], "eval": [s]}
    return out


def check_runs(config: dict, samples: Sequence[str]) -> dict[str, dict]:
    """:func:`runs`, raising a config error when the ablation would have no run. Called when the
    ablation is requested, so configs that never ask for it need not describe one."""
    out = runs(config, samples)
    if out:
        return out
    if not flow_scenes(config):
        raise MotionRefineError("the ablation needs benchmark scenes to evaluate on (config key 'benchmarks')")
    if not protocols(config):
        raise MotionRefineError("config key 'ablation': switch on heldout or transductive")
    raise MotionRefineError("config key 'ablation.heldout' needs sample videos to train on")


def finetune_name(variant: str, run: str, seed: int) -> str:
    """One fine-tune's folder below results/ablation/finetune/: variant/seed{i} for the heldout
    run, variant/{scene}/seed{i} for a transductive one."""
    return f"{variant}/seed{seed}" if run == HELDOUT else f"{variant}/{run}/seed{seed}"


def refined_path(variant: str, run: str, seed: int) -> str:
    return f"results/ablation/finetune/{finetune_name(variant, run, seed)}/refined.pth"


def eval_path(variant: str, run: str, seed: int) -> str:
    return f"results/ablation/eval/{run}/{variant}/seed{seed}.csv"


def train_index(spec: dict, run: str) -> str:
    """A run's training-set index under the variant's labels preset (shared by the variants
    that use the same preset, and by every seed)."""
    return f"results/ablation/train/{spec['labeller']}/{spec['checks']}/{run}.json"


def evaluations(config: dict, samples: Sequence[str], protocol: str | None = None) -> list[tuple[str, str, int, str]]:
    """(variant, run, seed, evaluation CSV) of every variant, run and seed (runs outer, seeds
    inner), optionally of one protocol's runs only; raises when the config plans no run
    (:func:`check_runs`)."""
    planned = check_runs(config, samples)
    return [(v, r, i, eval_path(v, r, i)) for r, spec in planned.items()
            if protocol is None or spec["protocol"] == protocol
            for v in variants(config) for i in seeds(config)]
