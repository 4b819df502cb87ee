"""The before/after report: one self-contained HTML page, a markdown summary and the wide
before/after table of every run.

Everything shown is read back from the workflow's own outputs (evaluation CSVs, label
stores, loss curves, checkpoints); the only computation is the sample flows, which are
re-run with the pretrained and refined checkpoints so their pictures match the weights
that were evaluated. Figures are drawn with matplotlib's Agg canvas (no pyplot, no global
backend switch) and embedded as base64 PNGs, so the page displays offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from motionrefine import __version__
from motionrefine.core.errors import MotionRefineError
from motionrefine.flow.evaluate import before_after
from motionrefine.train.curve import read_loss_curve
from motionrefine.report.flowviz import flow_to_rgb, robust_max, wheel_legend
from motionrefine.flow.labels import label_stats_table
from motionrefine.config.plan import HELDOUT, SCENE_SEP
from motionrefine.core.store import open_group, sha256_file, write_text_atomic

log = logging.getLogger("motionrefine")

PROTOCOL_COLOURS = {"heldout": "#1f77b4", "transductive": "#ff7f0e"}
EVAL_COLUMNS = ("run", "scene", "benchmark", "model", "epe", "acc_1px", "acc_3px", "acc_5px", "fl_all")
METRICS = ("epe", "acc_1px", "acc_3px", "acc_5px", "fl_all")


# ------------------------------------------------------------------ tables

def protocol_of(run: str) -> str:
    return "heldout" if run == HELDOUT else "transductive"


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


def before_after_table(evals: pd.DataFrame) -> pd.DataFrame:
    """Every run's wide before/after table, with ``protocol`` and ``run`` columns in front.
    EPE on non-occluded / occluded pixels is carried along where the scenes have masks."""
    extra = tuple(c for c in ("epe_noc", "epe_occ") if c in evals.columns)
    parts = []
    for run, df in evals.groupby("run", sort=False):
        wide = before_after(df, metrics=METRICS + extra)
        wide.insert(0, "run", run)
        wide.insert(0, "protocol", protocol_of(run))
        parts.append(wide)
    out = pd.concat(parts, ignore_index=True)
    # Heldout first, as in the figure; scenes in the order they were evaluated.
    order = {"heldout": 0, "transductive": 1}
    return out.sort_values("protocol", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


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
        "scene": table["scene"],
        "EPE before": table["epe_pretrained"].map(lambda x: fmt_number(x, ".3f")),
        "EPE after": table["epe_refined"].map(lambda x: fmt_number(x, ".3f")),
        "EPE change %": table["epe_change_pct"].map(lambda x: fmt_number(x, "+.2f")),
    })
    for m, name in (("acc_1px", "1px"), ("acc_3px", "3px"), ("acc_5px", "5px"), ("fl_all", "Fl-all")):
        out[f"{name} % before→after"] = [f"{_pct(a)} → {_pct(b)}"
                                         for a, b in zip(table[f"{m}_pretrained"], table[f"{m}_refined"])]
    return out


def display_label_quality(lq: pd.DataFrame) -> pd.DataFrame:
    if lq.empty:
        return lq
    out = pd.DataFrame({
        "benchmark": lq["benchmark"], "scene": lq["scene"],
        "kept %": lq["kept_fraction"].map(_pct),
        "label EPE (kept px)": lq["label_epe"].map(lambda x: fmt_number(x, ".3f")),
        "label 1px acc %": lq["label_acc_1px"].map(_pct),
        "pretrained EPE (all px)": lq.get("pretrained_epe", pd.Series(np.nan, lq.index)).map(lambda x: fmt_number(x, ".3f")),
        "kept px": lq["n_kept"].map(lambda x: fmt_number(x, ".0f")),
    })
    for c in lq.columns:
        if c.startswith("kept_fraction_") and c.endswith("px"):
            out[f"kept % at {c[len('kept_fraction_'):]}"] = lq[c].map(_pct)
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


def reading(table: pd.DataFrame, lq: pd.DataFrame, settings: dict) -> str:
    """One paragraph that says what the numbers say, including what got worse."""
    parts = []
    for proto, df in table.groupby("protocol", sort=False):
        ch = df["epe_change_pct"].astype(float)
        ok = ch[np.isfinite(ch)]
        if ok.empty:
            parts.append(f"{proto}: no finite EPE change.")
            continue
        better = int((ok < 0).sum())
        parts.append(f"{proto.capitalize()} ({len(ok)} scene{'s' if len(ok) != 1 else ''}): mean EPE change "
                     f"{ok.mean():+.2f}% (median {ok.median():+.2f}%), {better} of {len(ok)} improved.")
    worse = table[table["epe_change_pct"].astype(float) > 0]
    if worse.empty:
        parts.append("No scene got worse.")
    else:
        items = [f"{r.benchmark}/{r.scene} ({r.protocol}, {r.epe_change_pct:+.2f}%)" for r in worse.itertuples()]
        parts.append(f"Got worse: {', '.join(items)}.")
    if not lq.empty and lq["label_epe"].notna().any():
        msg = (f"Kept pseudo-labels cover {100 * lq['kept_fraction'].mean():.1f}% of ground-truth pixels on average "
               f"with EPE {lq['label_epe'].mean():.3f} px")
        if "pretrained_epe" in lq and lq["pretrained_epe"].notna().any():
            msg += (f", against {lq['pretrained_epe'].mean():.3f} px for the pretrained model over all pixels "
                    "(kept pixels are the easier ones, so this shows the check keeps good flow, not that the labels "
                    "beat the model)")
        parts.append(msg + ".")
    steps = settings.get("steps")
    parts.append(f"Every number comes from a single fine-tuning run ({steps if steps is not None else '?'} steps, "
                 f"profile {settings.get('profile', '?')}) and {len(table)} scene evaluations in all; no seed variance "
                 "was measured, so changes of a few percent should not be read as significant.")
    return " ".join(parts)


# ------------------------------------------------------------------ figures

def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _png_array(img: np.ndarray) -> str:
    fig = Figure(figsize=(img.shape[1] / 100, img.shape[0] / 100))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(img, interpolation="nearest")
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def figure_change(table: pd.DataFrame) -> str | None:
    """Per-scene % EPE change, bars grouped and coloured by protocol, dashed protocol means."""
    n = len(table)
    if n == 0:
        return None
    fig = Figure(figsize=(max(5.0, 0.5 * n + 2.5), 3.6))
    ax = fig.add_subplot()
    x, labels, pos = 0.0, [], []
    for proto, df in table.groupby("protocol", sort=False):
        xs = x + np.arange(len(df))
        vals = df["epe_change_pct"].astype(float).to_numpy()
        colour = PROTOCOL_COLOURS.get(proto, "grey")
        ax.bar(xs, np.nan_to_num(vals), color=colour, width=0.8, label=proto)
        finite = vals[np.isfinite(vals)]
        if finite.size:
            ax.hlines(finite.mean(), xs[0] - 0.45, xs[-1] + 0.45, colors=colour, linestyles="--", linewidth=1.5,
                      label=f"{proto} mean {finite.mean():+.1f}%")
        pos.extend(xs)
        labels.extend(f"{b}/{s}" for b, s in zip(df["benchmark"], df["scene"]))
        x = xs[-1] + 2.0  # gap between protocol groups
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(pos, labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("EPE change, % (negative = better)")
    ax.set_title("Per-scene EPE change after refinement")
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def figure_coverage(cov: pd.DataFrame) -> str | None:
    """Kept fraction per video: all pixels and per speed bin."""
    if cov.empty:
        return None
    bins = [c for c in cov.columns if c.startswith("kept_") and c.endswith("px")]
    series = [("all", cov["kept_fraction"])] + [(c[len("kept_"):], cov[c]) for c in bins]
    n, k = len(cov), len(series)
    width = 0.8 / k
    fig = Figure(figsize=(max(5.0, 0.6 * n * k / 2 + 2.5), 3.4))
    ax = fig.add_subplot()
    top = 0.0
    for j, (name, vals) in enumerate(series):
        pct = 100 * np.nan_to_num(vals.to_numpy(np.float64))
        bars = ax.bar(np.arange(n) + (j - (k - 1) / 2) * width, pct, width,
                      label=name if name == "all" else f"speed {name}", color="black" if name == "all" else f"C{j - 1}")
        ax.bar_label(bars, fmt="%.1f", fontsize=6)
        top = max(top, float(pct.max(initial=0.0)))
    ax.set_xticks(np.arange(n), cov["video"], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("pixels kept, %")
    # Real coverage can be a few percent: scale to the data, not to 100.
    ax.set_ylim(0, min(100.0, max(5.0, 1.2 * top)))
    ax.set_title("Pseudo-label coverage per video and speed bin (px/frame)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


def figure_label_quality(lq: pd.DataFrame) -> str | None:
    if lq.empty:
        return None
    names = [f"{b}/{s}" for b, s in zip(lq["benchmark"], lq["scene"])]
    x = np.arange(len(lq))
    fig = Figure(figsize=(max(6.0, 1.1 * len(lq) + 3), 3.2))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.bar(x, 100 * lq["kept_fraction"].to_numpy(np.float64), color="grey")
    ax1.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax1.set_ylabel("kept, % of GT pixels")
    ax1.set_ylim(0, 100)
    ax1.set_title("Kept fraction", fontsize=9)
    ax2.bar(x - 0.2, lq["label_epe"].to_numpy(np.float64), 0.4, label="labels (kept px)", color="C2")
    if "pretrained_epe" in lq:
        ax2.bar(x + 0.2, lq["pretrained_epe"].to_numpy(np.float64), 0.4, label="pretrained (all px)", color="C0")
    ax2.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax2.set_ylabel("EPE, px")
    ax2.set_title("Label EPE vs pretrained EPE", fontsize=9)
    ax2.legend(fontsize=7)
    return _png(fig)


def figure_losses(curves: dict[str, pd.DataFrame]) -> str | None:
    curves = {r: c for r, c in curves.items() if not c.empty}
    if not curves:
        return None
    fig = Figure(figsize=(10, 3.4))
    axes = fig.subplots(1, 2)
    for i, (run, c) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        win = max(1, len(c) // 20)  # batches of 2 are noisy: raw faint, running mean solid
        for ax, col in zip(axes, ("loss", "epe_to_label")):
            if col not in c:
                continue
            y = pd.to_numeric(c[col], errors="coerce")
            ax.plot(c["step"], y, color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(c["step"], y.rolling(win, min_periods=1).mean(), color=colour, linewidth=1.4, label=run)
    axes[0].set_title("training loss", fontsize=9)
    axes[1].set_title("EPE to the pseudo-labels (px)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("step")
    axes[1].legend(fontsize=7)
    return _png(fig)


# ------------------------------------------------------------------ sample flows

def training_run(video: str, runs: Sequence[str]) -> str | None:
    """The run whose fine-tuning saw ``video``: its own transductive run for a benchmark
    scene, the heldout run for a sample video."""
    if video in runs:
        return video
    if SCENE_SEP not in video and HELDOUT in runs:
        return HELDOUT
    return None


def pick_videos(videos: Sequence[str], cap: int) -> list[str]:
    """Up to ``cap`` videos, alternating sample videos and benchmark scenes so both show."""
    samples = [v for v in videos if SCENE_SEP not in v]
    scenes = [v for v in videos if SCENE_SEP in v]
    picked: list[str] = []
    while len(picked) < cap and (samples or scenes):
        for pool in (samples, scenes):
            if pool and len(picked) < cap:
                picked.append(pool.pop(0))
    return [v for v in videos if v in picked]


def sample_flows(videos: Sequence[str], frame_stores: Sequence[str], label_stores: Sequence[str],
                 runs: Sequence[str], refined: Sequence[str], pretrained: str, variant: str, iters: int,
                 max_videos: int = 6, device: str = "auto", threads: int = 1) -> list[dict]:
    """The middle pair of each chosen video through both models, plus its keep mask."""
    from motionrefine.core.device import pick_device
    from motionrefine.flow.inference import FlowEstimator
    from motionrefine.models.checkpoint import load_raft

    chosen = pick_videos(videos, max_videos)
    if not chosen:
        return []
    dev = pick_device(device, threads)
    weights = dict(zip(runs, refined))
    cache: dict[str, FlowEstimator] = {}

    def estimator(path: str) -> FlowEstimator:
        if path not in cache:
            model, _ = load_raft(path, variant)
            cache[path] = FlowEstimator(model.to(dev), iters=iters, device=dev)
        return cache[path]

    by_video = {v: (f, lab) for v, f, lab in zip(videos, frame_stores, label_stores)}
    out = []
    for v in chosen:
        fpath, lpath = by_video[v]
        frames = open_group(fpath)["frames"]
        if frames.shape[0] < 2:
            log.warning("%s: fewer than 2 frames, no sample flow", v)
            continue
        p = (frames.shape[0] - 1) // 2
        img1, img2 = np.asarray(frames[p]), np.asarray(frames[p + 1])
        lg = open_group(lpath)
        keep = np.asarray(lg["keep"][p], bool) if "keep" in lg and p < lg["keep"].shape[0] else None
        before = estimator(pretrained).flow(img1, img2)
        run = training_run(v, runs)
        after = estimator(weights[run]).flow(img1, img2) if run is not None else None
        out.append({"video": v, "pair": p, "frame": img1, "before": before, "after": after, "run": run,
                    "keep": keep})
        log.info("sample flow: %s pair %d (refined by %s)", v, p, run)
    return out


def figure_flows(samples: list[dict]) -> str | None:
    if not samples:
        return None
    h, w = samples[0]["frame"].shape[:2]
    cell = 2.6
    fig = Figure(figsize=(4 * cell, len(samples) * cell * h / w + 0.5 * len(samples)))
    axes = np.atleast_2d(fig.subplots(len(samples), 4, squeeze=False))
    for row, s in zip(axes, samples):
        # One normaliser for the pair: equal colours mean equal motion before and after.
        scale = robust_max(s["before"], s["after"])
        row[0].imshow(s["frame"])
        row[0].set_title(f"{s['video']} · frame {s['pair']}", fontsize=8)
        row[1].imshow(flow_to_rgb(s["before"], scale))
        row[1].set_title(f"pretrained (full colour = {scale:.1f} px)", fontsize=8)
        if s["after"] is not None:
            delta = np.linalg.norm(s["after"] - s["before"], axis=-1).mean()
            row[2].imshow(flow_to_rgb(s["after"], scale))
            row[2].set_title(f"refined [{s['run']}] · mean |Δ| {delta:.2f} px", fontsize=8)
        else:
            row[2].text(0.5, 0.5, "no run trained\non this video", ha="center", va="center", fontsize=8)
        if s["keep"] is not None:
            row[3].imshow(s["keep"], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            row[3].set_title(f"keep mask · {100 * s['keep'].mean():.1f}% kept", fontsize=8)
        else:
            row[3].text(0.5, 0.5, "no keep mask", ha="center", va="center", fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------ provenance

def provenance(evals: pd.DataFrame, pretrained: str, runs: Sequence[str], refined: Sequence[str],
               config: dict) -> dict:
    """Checkpoint digests (and whether the evaluation used those very files), settings, version."""
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
        from motionrefine.config.plan import finetune_settings

        settings = finetune_settings(config)
    except Exception:  # a partial config (tests, ad-hoc use) still gets a report
        settings = dict(config.get("finetune") or {})
    if "profile" not in settings:
        settings["profile"] = (config.get("finetune") or {}).get("profile", "?")
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "code_version": __version__,
            "pretrained": str(pretrained), "pretrained_sha256": pre_sha,
            "pinned_sha256": (config.get("model") or {}).get("sha256"), "runs": checks,
            "verify": config.get("verify"), "finetune": settings, "model": config.get("model"),
            "refine": config.get("refine")}


# ------------------------------------------------------------------ output

_CSS = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:nth-child(-n+4){text-align:left}img{max-width:100%}pre{background:#f7f7f7;padding:.6em;
font-size:11px;overflow-x:auto}.note{color:#555;font-size:13px}.bad{color:#b00}"""


def _img(b64: str | None, alt: str) -> str:
    if b64 is None:
        return f'<p class="note">({html.escape(alt)}: nothing to show)</p>'
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _html_table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, escape=True, border=0) if not df.empty else '<p class="note">(none)</p>'


def _summary_md(table, lq, cov, prov, text) -> str:
    shown = display_before_after(table)
    out = ["# motionrefine report", "",
           f"Generated {prov['date']} · motionrefine {prov['code_version']} · "
           f"pretrained sha256 `{prov['pretrained_sha256']}`", "", "## Reading", "", text, ""]
    out += ["## Before / after", "", "EPE in px; % change negative = better; accuracies and Fl-all in % of pixels.", ""]
    for proto, df in shown.groupby("protocol", sort=False):
        out += [f"### {proto}", "", markdown_table(df.drop(columns=["protocol"]))]
    out += ["## Label quality against ground truth", "",
            "Kept pseudo-labels of each benchmark scene against its ground truth; the pretrained EPE is over all "
            "valid pixels of the same scene.", "", markdown_table(display_label_quality(lq))]
    out += ["## Label coverage per video", "", markdown_table(display_coverage(cov))]
    out += ["## Provenance", "", f"- pretrained: `{prov['pretrained']}` sha256 `{prov['pretrained_sha256']}`"]
    for r in prov["runs"]:
        out.append(f"- refined [{r['run']}]: sha256 `{r['refined_sha256']}` (evaluated file matches: "
                   f"{r['evaluated_refined_matches']})")
    out += [f"- verify: `{json.dumps(prov['verify'], default=str)}`",
            f"- finetune: `{json.dumps(prov['finetune'], default=str)}`",
            f"- code version {prov['code_version']}, generated {prov['date']}", ""]
    return "\n".join(out)


def _html(table, lq, cov, prov, text, figs) -> str:
    shown = display_before_after(table)
    stale = [r["run"] for r in prov["runs"]
             if r["evaluated_refined_matches"] is False or r["evaluated_pretrained_matches"] is False]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>motionrefine report</title>"
             f"<style>{_CSS}</style></head><body>",
             "<h1>motionrefine: before / after refinement</h1>",
             f"<p class='note'>Generated {html.escape(prov['date'])} · motionrefine {html.escape(prov['code_version'])}</p>"]
    if stale:
        parts.append(f"<p class='bad'>Evaluation tables of {html.escape(', '.join(stale))} were made with "
                     "different checkpoints than the ones beside them: rerun the evaluation.</p>")
    parts += ["<h2>Reading</h2>", f"<p>{html.escape(text)}</p>",
              "<h2>1. Per-scene EPE change</h2>", _img(figs["change"], "per-scene EPE change")]
    for proto, df in shown.groupby("protocol", sort=False):
        parts += [f"<h3>{html.escape(proto)}</h3>", _html_table(df.drop(columns=["protocol"]))]
    parts += ["<h2>2. Pseudo-label coverage</h2>", _img(figs["coverage"], "label coverage"),
              _html_table(display_coverage(cov)),
              "<h2>3. Label quality against ground truth</h2>",
              "<p class='note'>Kept labels are measured on kept pixels only; the pretrained EPE is over all valid "
              "pixels of the same scene.</p>",
              _img(figs["quality"], "label quality"), _html_table(display_label_quality(lq)),
              "<h2>4. Sample flows (middle pair)</h2>",
              "<p class='note'>Middlebury colour coding, one magnitude scale per row; the keep mask is white where "
              "the pseudo-label passed the cycle check. Colour key:</p>",
              _img(figs["legend"], "flow colour key"), _img(figs["flows"], "sample flows"),
              "<h2>5. Fine-tuning curves</h2>", _img(figs["losses"], "loss curves"),
              "<h2>6. Provenance</h2>",
              f"<pre>{html.escape(json.dumps(prov, indent=1, default=str))}</pre>",
              "</body></html>"]
    return "\n".join(parts)


def optional_section(md_path: str | os.PathLike, png_path: str | os.PathLike, title: str,
                     number: int) -> tuple[str, str]:
    """(markdown, html) of a table (+ figure) another target writes, when present, else empty."""
    md_path, png = Path(md_path), Path(png_path)
    if not md_path.is_file():
        return "", ""
    body = md_path.read_text(encoding="utf-8")
    fig = base64.b64encode(png.read_bytes()).decode("ascii") if png.is_file() else None
    return (f"\n## {title}\n\n{body}",
            f"<h2>{number}. {html.escape(title)}</h2>{_img(fig, title)}<pre>{html.escape(body)}</pre>")


def ablation_section(folder: str | os.PathLike) -> tuple[str, str]:
    """results/ablation/table.md (+ figure.png) when the ablation has been built."""
    return optional_section(Path(folder) / "table.md", Path(folder) / "figure.png",
                            "Ablation (`snakemake ablation`)", 7)


def tracking_section(folder: str | os.PathLike) -> tuple[str, str]:
    """results/tracking/summary.md (+ per-scene δ_avg bars) when the tracking comparison ran."""
    return optional_section(Path(folder) / "summary.md", Path(folder) / "delta_avg.png",
                            "Long-range tracking: chained RAFT and the tracker, before and after", 8)


def build_report(evals: list[str], label_quality: str | None, label_stores: list[str], frame_stores: list[str],
                 losses: list[str], refined: list[str], runs: list[str], videos: list[str], pretrained: str,
                 variant: str, iters: int, config: dict, out_html: str, out_summary: str, out_table: str,
                 max_videos: int = 6, device: str = "auto", threads: int = 1,
                 ablation_dir: str | None = None) -> None:
    """Write the HTML report, the markdown summary and the before/after CSV (see module doc).

    ``runs`` pairs with ``losses`` and ``refined``; ``videos`` with ``label_stores`` and
    ``frame_stores``.
    """
    if len(losses) != len(runs) or len(refined) != len(runs):
        raise MotionRefineError(f"report: {len(runs)} runs but {len(losses)} loss curves and {len(refined)} refined checkpoints")
    if len(label_stores) != len(videos) or len(frame_stores) != len(videos):
        raise MotionRefineError(f"report: {len(videos)} videos but {len(label_stores)} label stores and "
                                f"{len(frame_stores)} frames stores")
    ev = load_evals(evals)
    table = before_after_table(ev)
    lq = label_quality_table(label_quality, ev)
    cov = coverage_table(label_stores)
    curves = {r: read_loss_curve(p) for r, p in zip(runs, losses)}
    prov = provenance(ev, pretrained, runs, refined, config)
    text = reading(table, lq, prov["finetune"])
    samples = sample_flows(videos, frame_stores, label_stores, runs, refined, pretrained, variant, iters,
                           max_videos=max_videos, device=device, threads=threads)
    figs = {"change": figure_change(table), "coverage": figure_coverage(cov), "quality": figure_label_quality(lq),
            "flows": figure_flows(samples), "legend": _png_array(wheel_legend(96)), "losses": figure_losses(curves)}
    Path(out_table).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(out_table).with_name(f".{Path(out_table).name}.tmp-{os.getpid()}")
    # The CSV travels alone: each row names the checkpoints, scene data and code behind it.
    shas = {r["run"]: r["refined_sha256"] for r in prov["runs"]}
    extra = {"pretrained_sha256": prov["pretrained_sha256"], "refined_sha256": table["run"].map(shas),
             "iters": iters, "code_version": __version__}
    if "scene_sha256" in ev:
        scene_ids = ev.drop_duplicates(["benchmark", "scene"]).set_index(["benchmark", "scene"])["scene_sha256"]
        extra["scene_sha256"] = [scene_ids.get((b, sc)) for b, sc in zip(table["benchmark"], table["scene"])]
    table.assign(**extra).to_csv(tmp, index=False)
    os.replace(tmp, out_table)
    # The ablation (`snakemake ablation`) is optional: shown when its table exists beside the report's folder.
    abl_md, abl_html = ablation_section(ablation_dir or Path(out_summary).parent.parent / "ablation")
    trk_md, trk_html = tracking_section(Path(out_summary).parent.parent / "tracking")
    write_text_atomic(out_summary, _summary_md(table, lq, cov, prov, text) + trk_md + abl_md)
    write_text_atomic(out_html, _html(table, lq, cov, prov, text, figs).replace(
        "</body></html>", trk_html + abl_html + "</body></html>"))
    log.info("report: %d runs, %d scene rows, %d sample flows -> %s", len(runs), len(table), len(samples), out_html)
