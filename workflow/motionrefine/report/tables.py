"""The report's tables: evaluation CSVs read back into one long table, the wide before/after
table of every run, label coverage and label quality; their human-readable forms and the
markdown and number formatting shared with the ablation table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from motionrefine.core.errors import MotionRefineError
from motionrefine.flow.evaluate import before_after
from motionrefine.flow.labels import label_stats_table
from motionrefine.config.plan import DEFAULT_ROLE, ROLES, base_run, protocol_of
from motionrefine.core.store import open_group

EVAL_COLUMNS = ("run", "scene", "benchmark", "model", "epe", "acc_1px", "acc_3px", "acc_5px", "fl_all")
METRICS = ("epe", "acc_1px", "acc_3px", "acc_5px", "fl_all")


def load_evals(paths: Sequence[str]) -> pd.DataFrame:
    """All evaluation rows (one per run, model, scene) in one long table."""
    frames = []
    for p in paths:
        df = pd.read_csv(p)
        missing = [c for c in EVAL_COLUMNS if c not in df.columns]
        if missing:
            raise MotionRefineError(f"{p}: not an evaluation table (missing columns {missing})")
        frames.append(df)
    if not frames:
        raise MotionRefineError("report: no evaluation tables given")
    out = pd.concat(frames, ignore_index=True)
    out["run"] = out["run"].astype(str)
    out["scene"] = out["scene"].astype(str)
    out["benchmark"] = out["benchmark"].fillna("").astype(str)
    return out


def before_after_table(evals: pd.DataFrame, roles: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Every run's wide before/after table, with ``protocol`` and ``run`` columns in front and each
    scene's ``role`` (``roles``: benchmark -> dev/test; a benchmark not named is test, the config's
    default). EPE on non-occluded / occluded pixels is carried along where the scenes have masks."""
    extra = tuple(c for c in ("epe_noc", "epe_occ") if c in evals.columns)
    parts = []
    for run, df in evals.groupby("run", sort=False):
        wide = before_after(df, metrics=METRICS + extra)
        wide.insert(0, "run", run)
        wide.insert(0, "protocol", protocol_of(run))
        parts.append(wide)
    out = pd.concat(parts, ignore_index=True)
    out.insert(out.columns.get_loc("scene") + 1, "role", out["benchmark"].map(lambda b: (roles or {}).get(b, DEFAULT_ROLE)))
    # Heldout first, as in the figure; scenes in the order they were evaluated.
    order = {"heldout": 0, "transductive": 1}
    return out.sort_values("protocol", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def role_means(table: pd.DataFrame) -> pd.DataFrame:
    """Per protocol and role (test first: the figure to quote; dev: the scenes defaults were
    chosen on), the mean and median EPE change % over the scenes with a finite change, and how
    many improved. A mean over dev and test together would let the tuned scenes carry the figure."""
    rows = []
    table = table if "role" in table else table.assign(role=DEFAULT_ROLE)
    for proto, df in table.groupby("protocol", sort=False):
        for role in sorted(ROLES, key=lambda r: r != "test"):
            ch = df.loc[df["role"] == role, "epe_change_pct"].astype(float)
            ch = ch[np.isfinite(ch)]
            if ch.size:
                rows.append({"protocol": proto, "role": role, "scenes": int(ch.size), "mean_change_pct": float(ch.mean()),
                             "median_change_pct": float(ch.median()), "improved": int((ch < 0).sum())})
    return pd.DataFrame(rows, columns=["protocol", "role", "scenes", "mean_change_pct", "median_change_pct", "improved"])


def seeds_table(evals: pd.DataFrame) -> pd.DataFrame:
    """Per run (seed repeats folded together) and scene: seeds, EPE change % of the trained
    (unguarded) and the refined (guard's choice) weights, mean and sample sd over the seeds."""
    rows = []
    ev = evals.assign(base=evals["run"].map(base_run))
    for (base, bench, scene), df in ev.groupby(["base", "benchmark", "scene"], sort=False):
        pre = df[df["model"] == "pretrained"].set_index("run")["epe"]
        row = {"protocol": protocol_of(base), "run": base, "benchmark": bench, "scene": scene,
               "seeds": int(pre.size), "epe_pretrained": float(pre.mean())}
        for model in ("trained", "refined"):
            change = 100.0 * (df[df["model"] == model].set_index("run")["epe"] / pre - 1.0)
            change = change.dropna()
            row[f"{model}_change_mean"] = float(change.mean()) if change.size else np.nan
            # Sample sd (ddof 1): undefined for a single seed.
            row[f"{model}_change_sd"] = float(change.std(ddof=1)) if change.size > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def coverage_table(label_stores: Sequence[str]) -> pd.DataFrame:
    """Per video: pairs, kept fraction of all pixels and per speed bin (pixel-weighted), and
    the share of pixels in each bin (a bin with few pixels says little)."""
    rows = []
    for lp in label_stores:
        stats = label_stats_table([lp])
        if stats.empty:
            continue
        pixels = float(len(stats) * np.prod(open_group(lp)["keep"].shape[1:]))
        row = {"video": stats["video"].iloc[0], "pairs": len(stats),
               "kept_fraction": stats["kept_count"].sum() / pixels if pixels else np.nan}
        for c in stats.columns:
            if not c.startswith("pixels_speed_"):
                continue
            b = c[len("pixels_speed_"):]
            px = stats[c].to_numpy(np.float64)
            kept = np.nan_to_num(stats[f"kept_fraction_speed_{b}"].to_numpy(np.float64)) * px
            # An empty bin has no coverage to report (NaN, not 0).
            row[f"kept_{b}px"] = kept.sum() / px.sum() if px.sum() > 0 else np.nan
            row[f"share_{b}px"] = px.sum() / pixels if pixels else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def label_quality_table(path: str | None, evals: pd.DataFrame) -> pd.DataFrame:
    """label_quality.csv with the pretrained model's EPE on the same scene beside it."""
    if not path or not Path(path).is_file():
        return pd.DataFrame()
    lq = pd.read_csv(path)
    if lq.empty:
        return lq
    lq["scene"] = lq["scene"].astype(str)
    lq["benchmark"] = lq["benchmark"].fillna("").astype(str)
    pre = (evals[evals["model"] == "pretrained"].groupby(["benchmark", "scene"], sort=False)["epe"].first()
           .rename("pretrained_epe").reset_index())
    return lq.merge(pre, on=["benchmark", "scene"], how="left")


# ------------------------------------------------------------------ formatting

def fmt_number(x, fmt: str) -> str:
    """``x`` formatted with ``fmt``; "–" for NaN/inf, the value as text when not a number."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "–" if not math.isfinite(x) else format(x, fmt)


def _pct(x) -> str:
    return fmt_number(100.0 * float(x), ".1f") if x is not None and pd.notna(x) else "–"


def display_before_after(table: pd.DataFrame) -> pd.DataFrame:
    """Human-readable columns: EPE in px, % change signed, accuracies and Fl-all in %."""
    out = pd.DataFrame({
        "protocol": table["protocol"], "run": table["run"], "benchmark": table["benchmark"],
        "scene": table["scene"], "role": table["role"],
        "EPE before": table["epe_pretrained"].map(lambda x: fmt_number(x, ".3f")),
        "EPE after": table["epe_refined"].map(lambda x: fmt_number(x, ".3f")),
        "EPE change %": table["epe_change_pct"].map(lambda x: fmt_number(x, "+.2f")),
    })
    for m, name in (("acc_1px", "1px"), ("acc_3px", "3px"), ("acc_5px", "5px"), ("fl_all", "Fl-all")):
        out[f"{name} % before→after"] = [f"{_pct(a)} → {_pct(b)}"
                                         for a, b in zip(table[f"{m}_pretrained"], table[f"{m}_refined"])]
    return out


def display_role_means(means: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "protocol": means["protocol"], "role": means["role"], "scenes": means["scenes"],
        "mean EPE change %": means["mean_change_pct"].map(lambda x: fmt_number(x, "+.2f")),
        "median EPE change %": means["median_change_pct"].map(lambda x: fmt_number(x, "+.2f")),
        "improved": [f"{i} of {n}" for i, n in zip(means["improved"], means["scenes"])],
    })


def display_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """EPE change as 'mean ± sd' over the seeds."""
    def pm(mean, sd):
        return fmt_number(mean, "+.1f") + ("" if pd.isna(sd) else " ± " + fmt_number(sd, ".1f"))
    return pd.DataFrame({
        "protocol": table["protocol"], "run": table["run"], "benchmark": table["benchmark"],
        "scene": table["scene"], "seeds": table["seeds"],
        "EPE before": table["epe_pretrained"].map(lambda x: fmt_number(x, ".3f")),
        "trained EPE change %": [pm(m, s) for m, s in zip(table["trained_change_mean"], table["trained_change_sd"])],
        "refined EPE change %": [pm(m, s) for m, s in zip(table["refined_change_mean"], table["refined_change_sd"])],
    })


def display_label_quality(lq: pd.DataFrame) -> pd.DataFrame:
    if lq.empty:
        return lq
    out = pd.DataFrame({
        "benchmark": lq["benchmark"], "scene": lq["scene"],
        "kept %": lq["kept_fraction"].map(_pct),
        "label EPE (kept px)": lq["label_epe"].map(lambda x: fmt_number(x, ".3f")),
        "student EPE (same px)": lq.get("student_epe_on_kept", pd.Series(np.nan, lq.index)).map(lambda x: fmt_number(x, ".3f")),
        "label 1px acc %": lq["label_acc_1px"].map(_pct),
        "pretrained EPE (all px)": lq.get("pretrained_epe", pd.Series(np.nan, lq.index)).map(lambda x: fmt_number(x, ".3f")),
        "kept px": lq["n_kept"].map(lambda x: fmt_number(x, ".0f")),
    })
    # Per ground-truth speed bin: kept %, and label / student EPE on the kept pixels.
    for c in lq.columns:
        if c.startswith("kept_fraction_") and c.endswith("px"):
            tag = c[len("kept_fraction_"):]
            cell = [_pct(k) for k in lq[c]]
            if f"label_epe_{tag}" in lq:
                stu = lq.get(f"student_epe_{tag}", pd.Series(np.nan, lq.index))
                cell = [f"{k} ({fmt_number(a, '.2f')} / {fmt_number(b, '.2f')})"
                        for k, a, b in zip(cell, lq[f"label_epe_{tag}"], stu)]
            out[f"kept % (label / student EPE) at {tag}"] = cell
    return out


def display_coverage(cov: pd.DataFrame) -> pd.DataFrame:
    if cov.empty:
        return cov
    out = pd.DataFrame({"video": cov["video"], "pairs": cov["pairs"], "kept %": cov["kept_fraction"].map(_pct)})
    for c in cov.columns:
        if c.startswith("kept_") and c.endswith("px"):
            b = c[len("kept_"):]
            out[f"kept % at {b}"] = cov[c].map(_pct)
            out[f"pixels % at {b}"] = cov[f"share_{b}"].map(_pct)
    return out


def markdown_table(df: pd.DataFrame) -> str:
    """GitHub-flavoured markdown table (no tabulate dependency)."""
    if df.empty:
        return "_(none)_\n"
    cells = [[str(c) for c in df.columns]] + [[str(v).replace("|", "\\|") for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in cells[0]) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(lines) + "\n"
