"""The report's figures, drawn on matplotlib's Agg canvas (no pyplot, no global backend
switch) and returned as base64 PNGs for embedding in the page (and for the figure files the
page writes beside it)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from motionrefine.report.flowviz import flow_to_rgb, robust_max, wheel_legend

PROTOCOL_COLOURS = {"heldout": "#1f77b4", "transductive": "#ff7f0e"}


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
    """Per-scene % EPE change, bars grouped and coloured by protocol, dev scenes hatched, dashed
    protocol means over the test scenes (over all where a protocol has none)."""
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
        dev = (df["role"] == "dev").to_numpy() if "role" in df else np.zeros(len(df), bool)
        bars = ax.bar(xs, np.nan_to_num(vals), color=colour, width=0.8, label=proto)
        for bar in np.asarray(bars.patches, object)[dev]:
            bar.set_hatch("//")
            bar.set_alpha(0.5)
        test = np.isfinite(vals) & ~dev
        finite, what = (vals[test], "test mean") if test.any() else (vals[np.isfinite(vals)], "mean")
        if finite.size:
            ax.hlines(finite.mean(), xs[0] - 0.45, xs[-1] + 0.45, colors=colour, linestyles="--", linewidth=1.5,
                      label=f"{proto} {what} {finite.mean():+.1f}%")
        pos.extend(xs)
        labels.extend(f"{b}/{s}" + (" (dev)" if d else "") for b, s, d in zip(df["benchmark"], df["scene"], dev))
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
    # The label must beat the student where it is kept: that gap is what fine-tuning can learn.
    ref, ref_name = (("student_epe_on_kept", "student (same kept px)") if "student_epe_on_kept" in lq
                     else ("pretrained_epe", "pretrained (all px)"))
    ax2.bar(x - 0.2, lq["label_epe"].to_numpy(np.float64), 0.4, label="labels (kept px)", color="C2")
    if ref in lq:
        ax2.bar(x + 0.2, lq[ref].to_numpy(np.float64), 0.4, label=ref_name, color="C0")
    ax2.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax2.set_ylabel("EPE, px")
    ax2.set_title("Label EPE vs the student's", fontsize=9)
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


def figure_placeholder(message: str) -> str:
    """A small figure that says why there is nothing to draw: a declared figure file always exists."""
    fig = Figure(figsize=(4.0, 1.0))
    fig.text(0.5, 0.5, message, ha="center", va="center", fontsize=9, color="#555555")
    return _png(fig)


def figure_legend(size: int = 96) -> str:
    """The flow colour key."""
    return _png_array(wheel_legend(size))
