"""The table and figure of the paper's comparison (`snakemake ablation`; its plan of variants
and runs: motionrefine/config/ablation.py).

The table (:func:`ablation_table`): one row per (protocol, variant) with the mean over
scenes of EPE before and after, the MEAN OF THE PER-SCENE % EPE CHANGES (not the change of
the mean EPE, which one large-EPE scene would dominate), each scene's % change, and the
mean 1 px / 3 px accuracy and Fl-all before and after. Each variant is fine-tuned with
several seeds: every figure is computed per seed, then given as the mean over seeds with
the sample standard deviation over seeds (``*_sd`` columns; NaN with one seed).
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd

from motionrefine.core.errors import MotionRefineError
from motionrefine.flow.evaluate import before_after
from motionrefine.config.ablation import PAPER_VERIFY, SWITCHES, TRANSDUCTIVE
from motionrefine.config.plan import HELDOUT
from motionrefine.report.tables import fmt_number, markdown_table
from motionrefine.core.store import write_atomic, write_text_atomic

log = logging.getLogger("motionrefine")

# Mean-over-scenes columns of the table: eval column -> table stem.
MEAN_METRICS = {"epe": "epe", "acc_1px": "acc_1px", "acc_3px": "acc_3px", "fl_all": "fl_all"}
CHANGE_PREFIX = "epe_change_pct_"

# What each kind of row still does differently from the method it is named after (the table
# says it beside the figures, so no row claims more than it runs).
BASELINE_DIFFERENCES = {
    "photometric": "UFlow's census + 2nd-order smoothness, but its 'brox' occlusion test (UFlow's default: "
                   "'wang') and without its self-supervision term",
    "cycle": "UnFlow's census + forward-backward terms, without its 2nd-order smoothness and occlusion penalty",
}


def paper_difference(spec: dict) -> str:
    """One variant's departures from the method its row stands for (``spec``: its switches)."""
    if spec.get("mode") in BASELINE_DIFFERENCES:
        return BASELINE_DIFFERENCES[spec["mode"]]
    if spec.get("labeller") == "student":
        v = PAPER_VERIFY
        return (f"the paper's self-labelling with the official thresholds (α {v['alpha']}, β {v['beta']} px, "
                f"colour {v['colour']})")
    # The teacher and thresholds are the config's (`teacher`, `verify`), whatever a user set them to.
    return "this project's teacher (config teacher) and thresholds (config verify), not the paper's"


def load_evals(items: Sequence[tuple[str, int, str]]) -> pd.DataFrame:
    """(variant, seed index, evaluation CSV of the evaluate script) triples -> one long table
    with ``variant``, ``seed`` and ``protocol`` columns."""
    frames = []
    for variant, seed, path in items:
        df = pd.read_csv(path)
        need = {"run", "benchmark", "scene", "model", *MEAN_METRICS}
        missing = sorted(need - set(df.columns))
        if missing:
            raise MotionRefineError(f"{path}: not an evaluation table (missing columns {missing})")
        df["variant"] = variant
        df["seed"] = int(seed)
        frames.append(df)
    if not frames:
        raise MotionRefineError("ablation: no evaluation tables given")
    out = pd.concat(frames, ignore_index=True)
    for c in ("run", "scene", "benchmark"):
        out[c] = out[c].fillna("").astype(str)
    out["protocol"] = np.where(out["run"] == HELDOUT, HELDOUT, TRANSDUCTIVE)
    return out


def _sd(values) -> float:
    """Sample standard deviation (ddof 1); NaN for fewer than two values."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(np.std(v, ddof=1)) if v.size > 1 else float("nan")


def before_spread(evals: pd.DataFrame) -> float:
    """Largest difference between variants' 'before' EPE on the same (protocol, scene):
    every variant evaluates the same pretrained weights, so this should be 0."""
    pre = evals[evals["model"] == "pretrained"]
    if pre.empty:
        return 0.0
    g = pre.groupby(["protocol", "benchmark", "scene"])["epe"]
    return float((g.max() - g.min()).max())


def ablation_table(evals: pd.DataFrame, specs: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per (protocol, variant), in the order they first appear (see module doc)."""
    rows = []
    for (proto, variant), df in evals.groupby(["protocol", "variant"], sort=False):
        per_seed = []  # one wide per-scene table per seed
        for seed, d in df.groupby("seed", sort=True):
            wide = before_after(d, metrics=tuple(MEAN_METRICS))
            if wide.empty:
                raise MotionRefineError(f"ablation {proto}/{variant} seed {seed}: no scene has both a pretrained "
                                        f"and a refined row")
            per_seed.append(wide.set_index(["benchmark", "scene"]))
        # Scene -> its % change under each seed (columns: seeds).
        changes = pd.concat([w["epe_change_pct"].astype(float) for w in per_seed], axis=1)
        scene_mean = changes.mean(axis=1)
        row = {"protocol": proto, "variant": variant, **{k: (specs or {}).get(variant, {}).get(k) for k in SWITCHES},
               "seeds": len(per_seed), "scenes": len(changes), "scenes_improved": int((scene_mean < 0).sum())}
        for col, stem in MEAN_METRICS.items():
            before = [float(w[f"{col}_pretrained"].mean()) for w in per_seed]
            after = [float(w[f"{col}_refined"].mean()) for w in per_seed]
            row[f"{stem}_before"] = float(np.mean(before))
            row[f"{stem}_after"] = float(np.mean(after))
            row[f"{stem}_after_sd"] = _sd(after)
            if col == "epe":
                # Mean over scenes of the % changes, per seed; then mean ± sd over seeds.
                seed_means = [float(w["epe_change_pct"].astype(float).mean()) for w in per_seed]
                row["epe_change_pct"] = float(np.mean(seed_means))
                row["epe_change_pct_sd"] = _sd(seed_means)
        for (b, s), m in scene_mean.items():
            row[f"{CHANGE_PREFIX}{b}/{s}"] = float(m)
            row[f"{CHANGE_PREFIX}{b}/{s}_sd"] = _sd(changes.loc[(b, s)].to_numpy())
        rows.append(row)
    table = pd.DataFrame(rows)
    if specs is None:
        table = table.drop(columns=list(SWITCHES))
    return table


def scene_columns(table: pd.DataFrame) -> list[str]:
    """The per-scene mean % change columns (without their _sd companions)."""
    return [c for c in table.columns if c.startswith(CHANGE_PREFIX) and not c.endswith("_sd")]


def mean_sd(mean, sd, fmt: str) -> str:
    """'mean ± sd', or the mean alone where the sd is undefined (one seed)."""
    m = fmt_number(mean, fmt)
    if m == "–" or sd is None or not np.isfinite(float(sd)):
        return m
    return f"{m} ± {fmt_number(sd, fmt.lstrip('+'))}"


# ------------------------------------------------------------------ outputs

def table_markdown(table: pd.DataFrame, spread: float | None = None, settings: dict | None = None) -> str:
    """The table in GitHub markdown: EPE in px, changes in % (negative = better), accuracies
    and Fl-all in % of pixels, before → after."""
    scene_cols = scene_columns(table)
    lines = []
    for proto, df in table.groupby("protocol", sort=False):
        shown = pd.DataFrame({"variant": df["variant"]})
        for k in SWITCHES:
            if k in df:
                shown[k] = df[k].map(lambda v: {True: "yes", False: "no"}.get(v, v))
        shown["EPE before"] = df["epe_before"].map(lambda x: fmt_number(x, ".3f"))
        shown["EPE after"] = [mean_sd(m, sd, ".3f") for m, sd in zip(df["epe_after"], df["epe_after_sd"])]
        shown["EPE change % (mean of scenes)"] = [mean_sd(m, sd, "+.2f")
                                                  for m, sd in zip(df["epe_change_pct"], df["epe_change_pct_sd"])]
        shown["improved"] = [f"{a}/{n}" for a, n in zip(df["scenes_improved"], df["scenes"])]
        shown["seeds"] = df["seeds"].astype(int).astype(str)
        for c in scene_cols:
            shown[c[len(CHANGE_PREFIX):] + " %"] = [mean_sd(m, sd, "+.1f") for m, sd in zip(df[c], df[c + "_sd"])]
        for stem, name in (("acc_1px", "1px"), ("acc_3px", "3px"), ("fl_all", "Fl-all")):
            shown[f"{name} % before→after"] = [f"{fmt_number(100 * a, '.1f')} → {fmt_number(100 * b, '.1f')}"
                                               for a, b in zip(df[f"{stem}_before"], df[f"{stem}_after"])]
        if all(k in df for k in SWITCHES):
            shown["against its paper"] = [paper_difference(r) for r in df[list(SWITCHES)].to_dict("records")]
        # Scenes this protocol never evaluated are all '–' (a transductive run has one scene each).
        shown = shown.loc[:, [c for c in shown.columns if not (c.endswith(" %") and (shown[c] == "–").all())]]
        lines += [f"### {proto}", "", markdown_table(shown)]
    notes = ["EPE before/after: mean over scenes (px). EPE change %: mean of the per-scene % changes "
             "(negative = better), so every scene counts equally; per-scene columns follow. "
             "Accuracies and Fl-all: mean over scenes, in % of pixels. "
             "Each figure is computed per seed; shown as mean ± sample sd over the seeds "
             "(no ± with one seed); 'improved': scenes whose mean change is negative."]
    if settings:
        base = settings.get("seed", 125)
        n = int(table["seeds"].max()) if "seeds" in table and len(table) else 1
        seeds = f"seed {base}" if n == 1 else f"seeds {base}..{base + n - 1}"
        notes.append(f"Every variant: {settings.get('steps')} steps, batch {settings.get('batch_size')}, "
                     f"crop up to {settings.get('augment', {}).get('crop')} (shrunk to fit the smallest video), lr {settings.get('lr')}, "
                     f"{seeds}; the fine-tuned weights, without the guard.")
    if spread is not None:
        notes.append(f"'Before' is each variant's own evaluation of the pretrained weights; largest difference "
                     f"between variants on one scene: {spread:.2g} px.")
    return "\n".join(lines + [" ".join(notes), ""])


def figure(table: pd.DataFrame, out_png: str) -> None:
    """Bars: mean % EPE change per variant (one colour per protocol) with ± 1 sd over seeds as
    error bars; dots: each scene (mean over seeds)."""
    from matplotlib.figure import Figure

    scene_cols = scene_columns(table)
    protos = list(dict.fromkeys(table["protocol"]))
    names = list(dict.fromkeys(table["variant"]))
    width = 0.8 / len(protos)
    fig = Figure(figsize=(max(5.0, 0.9 * len(names) + 2.0), 3.8))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # fixed jitter: the figure is reproducible
    for j, proto in enumerate(protos):
        df = table[table["protocol"] == proto].set_index("variant").reindex(names)
        xs = np.arange(len(names)) + (j - (len(protos) - 1) / 2) * width
        sd = df["epe_change_pct_sd"].to_numpy(float)
        ax.bar(xs, np.nan_to_num(df["epe_change_pct"].to_numpy(float)), width * 0.9, color=f"C{j}",
               alpha=0.75, label=f"{proto}: mean of scenes (± sd over seeds)",
               yerr=np.where(np.isfinite(sd), sd, 0.0), capsize=3, error_kw={"linewidth": 1})
        for x, (_, r) in zip(xs, df.iterrows()):
            vals = r[scene_cols].to_numpy(float)
            vals = vals[np.isfinite(vals)]
            ax.scatter(x + rng.uniform(-0.2, 0.2, vals.size) * width, vals, s=12, color="black", zorder=3,
                       label="one scene" if (j == 0 and x == xs[0]) else None)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("EPE change, % (negative = better)")
    ax.set_title("Ablation: EPE change after fine-tuning, per variant")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    write_atomic(out_png, lambda tmp: fig.savefig(tmp, dpi=110), keep_suffix=True)


def build_ablation(items: Sequence[tuple[str, int, str]], specs: dict[str, dict], out_csv: str, out_md: str,
                   out_png: str, settings: dict | None = None) -> pd.DataFrame:
    """Evaluation CSVs of every (variant, seed) and run, as (variant, seed, CSV) -> table.csv,
    table.md, figure.png."""
    evals = load_evals(items)
    table = ablation_table(evals, specs)
    spread = before_spread(evals)
    if spread > 1e-6:
        log.warning("the pretrained EPE differs between variants by up to %.3g px", spread)
    write_atomic(out_csv, lambda tmp: table.to_csv(tmp, index=False))
    write_text_atomic(out_md, table_markdown(table, spread, settings))
    figure(table, out_png)
    log.info("ablation: %d rows -> %s", len(table), out_csv)
    return table
