"""The guard's verdicts in the report: per run, what the guard kept and why, the held-back
agreement change with its bootstrap interval, its label-free signals before and after, and
whether the true EPE change of the unguarded fine-tune (on the scenes with ground truth)
agreed with the decision; per sample video of the heldout run, the same change, interval and
flag (helped / not shown / reverted) and the weights that video's deliverable uses, so a user
sees whether their own footage got better (no ground truth there: the signals are all there is).

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
        if "interval_pct" not in g:
            raise MotionRefineError(f"{p}: a guard verdict without an interval, written by an older version; "
                                    "rerun rule guard")
        out[run] = g
    return out


def _signal(sig: Mapping | None, key: str) -> float:
    v = (sig or {}).get(key)
    return float(v) if v is not None else np.nan


def _interval(g: Mapping) -> tuple[float, float]:
    lo, hi = g.get("interval_pct") or (None, None)
    return (float(lo) if lo is not None else np.nan), (float(hi) if hi is not None else np.nan)


def change_text(change, lo, hi, flag=None) -> str:
    """'-21.1 [-28.0, -14.1] (helped)': the change % and its interval; '–' where not computed."""
    text = fmt_number(change, "+.1f")
    if text != "–":
        bounds = f"[{fmt_number(lo, '+.1f')}, {fmt_number(hi, '+.1f')}]" if pd.notna(lo) else "[no interval]"
        text += " " + bounds
    return f"{text} ({flag})" if flag else text


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
        lo, hi = _interval(g)
        row = {"run": run, "protocol": protocol_of(run), "kept": "refined" if g["keep_refined"] else "pretrained",
               "judged": judged, "reason": g.get("reason", ""), "flag": g.get("flag", ""),
               "change_pct": _signal(g, "change_pct"), "interval_lo_pct": lo, "interval_hi_pct": hi,
               "confidence": (g.get("bootstrap") or {}).get("confidence", np.nan)}
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
    out = pd.DataFrame({"run": table["run"], "protocol": table["protocol"], "kept": table["kept"]})
    out[f"agreement change % [{_level(table)} interval]"] = [
        change_text(r["change_pct"], r["interval_lo_pct"], r["interval_hi_pct"], r["flag"] if r["judged"] else None)
        for _, r in table.iterrows()]
    out["reason"] = table["reason"]
    for key, name, how in SIGNALS:
        out[f"{name} before→after"] = [_before_after(r, key, how) for _, r in table.iterrows()]
    out["GT scenes"] = table["scenes"]
    out["true EPE pretrained→trained"] = [
        f"{fmt_number(a, '.3f')} → {fmt_number(b, '.3f')}"
        for a, b in zip(table["true_epe_pretrained"], table["true_epe_trained"])]
    out["true EPE change %"] = table["true_epe_change_pct"].map(lambda x: fmt_number(x, "+.2f"))
    out["agreed"] = table["agreed"].map(lambda a: "–" if a is None or pd.isna(a) else ("yes" if a else "no"))
    return out


def _level(table: pd.DataFrame) -> str:
    """'95 %': the interval's level, from the verdicts (the default when none says)."""
    levels = sorted({float(c) for c in table.get("confidence", pd.Series(dtype=float)).dropna()})
    return " / ".join(f"{100 * c:g} %" for c in levels) or "95 %"


def footage_table(guards: Mapping[str, dict], run: str = HELDOUT) -> pd.DataFrame:
    """Per sample video of ``run``: each signal pretrained and refined, the agreement change
    with its interval, the flag, the weights the video uses and the held-back pixels and
    blocks behind it. Empty when the run is absent or its guard judged nothing."""
    g = guards.get(run) or {}
    if not g.get("signals"):
        return pd.DataFrame()
    confidence = (g.get("bootstrap") or {}).get("confidence", np.nan)
    rows = []
    for video, entry in (g.get("videos") or {}).items():
        pre, ref = entry.get("pretrained") or {}, entry.get("refined") or {}
        lo, hi = _interval(entry)
        row = {"video": video, "agreement_pixels": pre.get("agreement_pixels"), "blocks": entry.get("blocks"),
               "change_pct": _signal(entry, "change_pct"), "interval_lo_pct": lo, "interval_hi_pct": hi,
               "flag": entry.get("flag"), "use": entry.get("use"), "confidence": confidence}
        for key, _, _ in SIGNALS:
            row[f"{key}_pretrained"] = _signal(pre, key)
            row[f"{key}_refined"] = _signal(ref, key)
        rows.append(row)
    return pd.DataFrame(rows)


def display_footage(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table
    out = pd.DataFrame({"video": table["video"]})
    for key, name, how in SIGNALS:
        out[f"{name} pretrained→refined"] = [_before_after(r, key, how) for _, r in table.iterrows()]
    # The decision signal's change per video: negative = the refined weights agree better.
    out[f"agreement change % [{_level(table)} interval]"] = [
        change_text(r["change_pct"], r["interval_lo_pct"], r["interval_hi_pct"]) for _, r in table.iterrows()]
    out["verdict"] = table["flag"]
    out["uses"] = table["use"]
    out["held-back px"] = table["agreement_pixels"].map(lambda x: fmt_number(x, ".0f"))
    out["blocks"] = table["blocks"].map(lambda x: fmt_number(x, ".0f"))
    return out
