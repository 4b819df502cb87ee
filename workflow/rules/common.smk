# Config and sample sheet, checked once at parse time; the logic is in motionrefine/config.py.
import re
import sys
from pathlib import Path

# The scripts and this file import the library from the checkout, installed or not (--sdm conda).
sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from motionrefine import config as mrconfig

mrconfig.validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))
SAMPLES = mrconfig.load_samples(config)
MODEL = config["model"]["name"]


wildcard_constraints:
    video="[A-Za-z0-9_-]+",
    model="[A-Za-z0-9_.-]+",


def res(rule, key):
    """Scheduling value ``key`` of ``rule`` from config resources (rule entry over default)."""
    return mrconfig.rule_resources(config, rule)[key]


def sample(wildcards):
    return SAMPLES.loc[wildcards.video]


def checkpoint_path(wildcards):
    # Resolved lazily: a missing checkpoint only stops runs that need flow.
    return str(mrconfig.model_checkpoint(config))


def all_targets():
    return expand("results/frames/{video}.zarr", video=SAMPLES.index) + expand(
        "results/flow/{model}/{video}.zarr", model=MODEL, video=SAMPLES.index
    )
