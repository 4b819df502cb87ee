"""The guard's verdicts in the report: per run, what the guard kept and why, its label-free
signals before and after, and whether the true EPE change of the unguarded fine-tune (on
the scenes with ground truth) agreed with the decision; per sample video of the heldout
run, the same signals, so a user sees whether their own footage got better (no ground truth
there: the signals are all there is).

Everything is read from guard.json (``flow.guard.guard_weights``) and the eval CSVs.
"""

from __future__ import annotations

import json
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from motionrefine.config.plan import HELDOUT, protocol_of
from motionrefine.core.errors import MotionRefineError
from motionrefine.report.tables import fmt_number

# (guard.json key, shown name, how it is shown); the first is the guard's decision signal.
SIGNALS = (("agreement_epe", "held-back agreement EPE (px)", "epe"),
           ("fb_consistent_rate", "fb-consistent %", "pct"),
           ("photometric_error", "photometric error", "photo"))


def read_guards(paths: Sequence[str], runs: Sequence[str]) -> dict[str, dict]:
    """run -> guard.json contents; ``paths`` pairs with ``runs``."""
    if len(paths) != len(runs):
        raise MotionRefineError(f"report: {len(runs)} runs but {len(paths)} guard verdicts")
    out = {}
    for run, p in zip(runs, paths):
        with open(p, encoding="utf-8") as fh:
            g = json.load(fh)  # NaN signals are written as NaN, which json reads back
        if "keep_refined" not in g:
            raise MotionRefineError(f"{p}: not a guard verdict (no keep_refined)")
        out[run] = g
    return out


def _signal(sig: Mapping | None, key: str) -> float:
    v = (sig or {}).get(key)
    return float(v) if v is not None else np.nan


def true_change(evals: pd.DataFrame, run: str) -> dict:
    """Mean ground-truth EPE of pretrained and trained (unguarded) weights over the run's scenes
    evaluated with both; NaN when the run has no trained rows."""
    ev = evals[evals["run"] == run]
    keys = ["benchmark", "scene"]
    pre = ev[ev["model"] == "pretrained"].groupby(keys)["epe"].first()
    trained = ev[ev["model"] == "trained"].groupby(keys)["epe"].first()
    both = pd.concat([pre.rename("pre"), trained.rename("trained")], axis=1, join="inner").dropna()
    if both.empty:
        return {"scenes": 0, "true_epe_pretrained": np.nan, "true_epe_trained": np.nan,
                "true_epe_change_pct": np.nan}
    a, b = float(both["pre"].mean()), float(both["trained"].mean())
    return {"scenes": len(both), "true_epe_pretrained": a, "true_epe_trained": b,
            "true_epe_change_pct": 100.0 * (b / a - 1.0) if a else np.nan}


def guard_table(guards: Mapping[str, dict], evals: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the kept weights, the reason, each signal before/after, the true EPE
    change of the trained weights and ``agreed`` (None where it cannot be judged)."""
    rows = []
    for run, g in guards.items():
        signals = g.get("signals") or {}
        # A disabled guard kept the weights unjudged: no decision to hold against the truth.
        judged = bool(signals)
        row = {"run": run, "protocol": protocol_of(run), "kept": "refined" if g["keep_refined"] else "pretrained",
               "judged": judged, "reason": g.get("reason", "")}
        for key, _, _ in SIGNALS:
            for model in ("pretrained", "refined"):
                row[f"{key}_{model}"] = _signal(signals.get(model), key)
        row.update(true_change(evals, run))
        lower = row["true_epe_trained"] < row["true_epe_pretrained"]
        measurable = judged and np.isfinite(row["true_epe_change_pct"])
        row["agreed"] = (bool(lower) == bool(g["keep_refined"])) if measurable else None
        rows.append(row)
    return pd.DataFrame(rows)


def agreement_line(table: pd.DataFrame) -> str:
    """'guard agreed with the true EPE change on k of n runs' (+ the runs it could not be judged on)."""
    if table.empty:
        return "No guard verdicts."
    judged = table["agreed"].dropna()
    k, n = int(sum(bool(a) for a in judged)), len(judged)
    line = f"guard agreed with the true EPE change on {k} of {n} runs"
    left = len(table) - n
    if left:
        line += (f" ({left} run{'s' if left != 1 else ''} not counted: guard disabled or no ground-truth "
                 "evaluation of the trained weights)")
    return line + "."


def _shown(x, how: str) -> str:
    if how == "pct":
        return fmt_number(100.0 * float(x), ".1f") if pd.notna(x) else "–"
    return fmt_number(x, ".3f" if how == "epe" else ".4f")


def _before_after(row, key: str, how: str) -> str:
    return f"{_shown(row[f'{key}_pretrained'], how)} → {_shown(row[f'{key}_refined'], how)}"


def display_guard(table: pd.DataFrame) -> pd.DataFrame:
    """Human-readable guard table (signals pretrained → refined)."""
    if table.empty:
        return table
    out = pd.DataFrame({"run": table["run"], "protocol": table["protocol"], "kept": table["kept"],
                        "reason": table["reason"]})
    for key, name, how in SIGNALS:
        out[f"{name} before→after"] = [_before_after(r, key, how) for _, r in table.iterrows()]
    out["GT scenes"] = table["scenes"]
    out["true EPE pretrained→trained"] = [
        f"{fmt_number(a, '.3f')} → {fmt_number(b, '.3f')}"
        for a, b in zip(table["true_epe_pretrained"], table["true_epe_trained"])]
    out["true EPE change %"] = table["true_epe_change_pct"].map(lambda x: fmt_number(x, "+.2f"))
    out["agreed"] = table["agreed"].map(lambda a: "–" if a is None or pd.isna(a) else ("yes" if a else "no"))
    return out


def footage_table(guards: Mapping[str, dict], run: str = HELDOUT) -> pd.DataFrame:
    """Per sample video of ``run``: each signal pretrained and refined, and the held-back pixels
    behind the agreement. Empty when the run is absent or its guard judged nothing."""
    g = guards.get(run)
    videos = (g or {}).get("videos") or {}
    pre, ref = videos.get("pretrained") or {}, videos.get("refined") or {}
    rows = []
    for video in list(dict.fromkeys([*pre, *ref])):
        row = {"video": video, "agreement_pixels": (pre.get(video) or ref.get(video) or {}).get("agreement_pixels")}
        for key, _, _ in SIGNALS:
            row[f"{key}_pretrained"] = _signal(pre.get(video), key)
            row[f"{key}_refined"] = _signal(ref.get(video), key)
        rows.append(row)
    return pd.DataFrame(rows)


def display_footage(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table
    out = pd.DataFrame({"video": table["video"]})
    for key, name, how in SIGNALS:
        out[f"{name} pretrained→refined"] = [_before_after(r, key, how) for _, r in table.iterrows()]
    pre, ref = table["agreement_epe_pretrained"], table["agreement_epe_refined"]
    # The decision signal's change per video: negative = the refined weights agree better.
    out["agreement change %"] = (100.0 * (ref / pre - 1.0)).map(lambda x: fmt_number(x, "+.1f"))
    out["held-back px"] = table["agreement_pixels"].map(lambda x: fmt_number(x, ".0f"))
    return out
