"""Provenance of the report: checkpoint digests (and whether the evaluations used those very
files), the settings shown, the code version and the date."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Sequence

import pandas as pd

from motionrefine import __version__
from motionrefine.config.plan import finetune_settings
from motionrefine.core.store import sha256_file
from motionrefine.report.tables import protocol_of


def provenance(evals: pd.DataFrame, pretrained: str, runs: Sequence[str], refined: Sequence[str],
               config: dict) -> dict:
    """Checkpoint digests (and whether the evaluation used those very files), settings, version.
    ``config``: the sections shown (model, verify, finetune, refine); the finetune settings
    shown are the effective ones (profile, then explicit keys)."""
    pre_sha = sha256_file(pretrained)
    checks = []
    for run, path in zip(runs, refined):
        sha = sha256_file(path)
        ev = evals[evals["run"] == run]
        used = set(ev.loc[ev["model"] == "refined", "checkpoint_sha256"].dropna().astype(str)) if "checkpoint_sha256" in ev else set()
        used_pre = set(ev.loc[ev["model"] == "pretrained", "checkpoint_sha256"].dropna().astype(str)) if "checkpoint_sha256" in ev else set()
        # A mismatch means the evaluation table is older than the weights beside it.
        checks.append({"run": run, "protocol": protocol_of(run), "refined_sha256": sha,
                       "evaluated_refined_matches": (used == {sha}) if used else None,
                       "evaluated_pretrained_matches": (used_pre == {pre_sha}) if used_pre else None})
    try:
        settings = finetune_settings(config)
    except Exception:  # a partial config (tests, ad-hoc use) still gets a report
        settings = dict(config.get("finetune") or {})
    if "profile" not in settings:
        settings["profile"] = (config.get("finetune") or {}).get("profile", "?")
    # A plan key (runs repeat per seed), not a fine-tuning setting: shown beside them.
    settings["seeds"] = int((config.get("finetune") or {}).get("seeds", 1))
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "code_version": __version__,
            "pretrained": str(pretrained), "pretrained_sha256": pre_sha,
            "pinned_sha256": (config.get("model") or {}).get("sha256"), "runs": checks,
            "verify": config.get("verify"), "finetune": settings, "model": config.get("model"),
            "refine": config.get("refine")}
