"""The plan of the paper's comparison (`snakemake ablation`): the recipe against its
ablations and against naive self-supervised fine-tuning, on the same start weights, videos,
steps and schedule. Its table and figure: motionrefine/report/ablation.py.

A variant is the recipe (fine-tune on pseudo-labels made with the forward-backward and
colour checks, with augmentation, no speed re-balancing) with some of four switches
changed: ``mode`` (labels | photometric | cycle), ``checks`` (none | fb | fb+colour),
``augment`` and ``rebalance``. Everything else (steps, batch, crop, lr, seed, schedule)
is the ``finetune`` section's, so only the switch differs between two rows.

Protocols: ``heldout`` (train on the sample videos, evaluate on every benchmark scene;
one fine-tune per variant) and optionally ``transductive`` (one fine-tune per variant and
scene on that scene's own frames, evaluated on it).
"""

from __future__ import annotations

from typing import Sequence

from motionrefine.core.errors import MotionRefineError
from motionrefine.config.plan import HELDOUT, finetune_settings, flow_scenes

TRANSDUCTIVE = "transductive"
SWITCHES = ("mode", "checks", "augment", "rebalance")
# The recipe every variant departs from (the paper's two-stage recipe as this project runs it).
RECIPE = {"mode": "labels", "checks": "fb+colour", "augment": True, "rebalance": False}
DEFAULT_VARIANTS = {
    "recipe": {},
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


def variant_settings(config: dict, spec: dict) -> dict:
    """The fine-tuning settings of one variant: the `finetune` section's (steps, schedule,
    seed...) with the variant's mode, augmentation and re-balancing switches."""
    s = finetune_settings(config)
    s["mode"] = spec["mode"]
    s["rebalance"] = bool(spec["rebalance"])
    s["augment"] = {**s["augment"], "no_aug": not spec["augment"]}
    return s


def label_presets(config: dict) -> list[str]:
    """The checks presets whose labels the variants train on (sorted, unique)."""
    return sorted({v["checks"] for v in variants(config).values()})


def label_store(config: dict, checks: str, video: str) -> str:
    """The main chain's labels serve the preset it was made with; other presets get their own."""
    if checks == (config.get("verify") or {}).get("checks", "fb+colour"):
        return f"results/labels/flow/{video}.zarr"
    return f"results/ablation/labels/{checks}/{video}.zarr"


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


def finetune_name(variant: str, run: str) -> str:
    """One fine-tune's folder below results/ablation/finetune/: the variant's own for the
    heldout run, a transductive run's one folder below it."""
    return variant if run == HELDOUT else f"{variant}/{run}"


def refined_path(variant: str, run: str) -> str:
    return f"results/ablation/finetune/{finetune_name(variant, run)}/refined.pth"


def eval_path(variant: str, run: str) -> str:
    return f"results/ablation/eval/{run}/{variant}.csv"


def train_index(spec: dict, run: str) -> str:
    """A run's training-set index under the variant's checks preset (shared by the variants
    that use the same preset)."""
    return f"results/ablation/train/{spec['checks']}/{run}.json"


def evaluations(config: dict, samples: Sequence[str]) -> list[tuple[str, str, str]]:
    """(variant, run, evaluation CSV) of every variant and run, runs outer; raises when the
    config plans no run (:func:`check_runs`)."""
    return [(v, r, eval_path(v, r)) for r in check_runs(config, samples) for v in variants(config)]
