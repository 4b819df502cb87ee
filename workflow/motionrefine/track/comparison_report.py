"""What the tracking comparison writes beside eval.csv: per-scene δ_avg bars (the paper's
TAP-Vid-DAVIS figure), summary.md (means per tracker and the refinement's δ_avg change per
scene) and tracks drawn on a scene's frames. Rows are named as ``track.comparison`` names them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from motionrefine.io.readers import TrackScene
from motionrefine.track.evaluate import METRIC_COLUMNS, refinement_gains, summary_table


def delta_avg_figure(df: pd.DataFrame, names: Sequence[str], out_figure: str | os.PathLike) -> None:
    """δ_avg per scene, one bar per tracker of ``names`` (the legend), scenes as in ``df``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scene_names = list(dict.fromkeys(df["scene"]))
    fig = Figure(figsize=(1.6 + 1.3 * len(scene_names), 3.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        mine = df[df["tracker"] == name].set_index("scene")["delta_avg"]
        xs = [i for i, s in enumerate(scene_names) if s in mine.index]
        ax.bar(np.array(xs) + (k - (len(names) - 1) / 2) * width, [mine[scene_names[i]] for i in xs], width,
               label=name)
    ax.set_xticks(np.arange(len(scene_names)), scene_names)
    ax.set_ylabel("δ_avg (TAP-Vid, 256×256)")
    ax.set_title("Long-range tracking on the real-texture scenes")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(out_figure, dpi=110, bbox_inches="tight")  # the legend sits outside the axes


def summary_markdown(df: pd.DataFrame, gains: Mapping[str, str]) -> str:
    """summary.md: the mean of each metric per tracker over the scenes it ran on, and for
    ``gains`` (refined tracker → its pretrained one) the δ_avg change per scene."""
    scene_names = list(dict.fromkeys(df["scene"]))
    means = summary_table(df)
    counts = df.groupby("tracker")["scene"].count()
    lines = ["| tracker | scenes | " + " | ".join(METRIC_COLUMNS) + " |", "|---" * (len(METRIC_COLUMNS) + 2) + "|"]
    for name, row in means.iterrows():
        lines.append(f"| {name} | {counts[name]} | " + " | ".join(f"{row[c]:.3f}" for c in METRIC_COLUMNS) + " |")
    text = (f"Mean over the scenes each tracker ran on ({len(scene_names)} in all; TAP-Vid metrics at 256×256, "
            "strided queries on the generated scenes, the file's own on TAP-Vid videos; survival = share of the track before the first error > 16 px; MTE = median "
            "trajectory error). A transductive tracker is refined on each scene's own frames (no labels) and "
            "runs only there.\n\n" + "\n".join(lines) + "\n")
    change = refinement_gains(df, gains)
    if len(change):
        text += ("\nRefinement, δ_avg change per scene (points = 0.01):\n\n| tracker | versus | "
                 + " | ".join(dict.fromkeys(change["scene"])) + " | mean |\n" + "|---" * (change["scene"].nunique() + 3)
                 + "|\n")
        for (refined, versus), part in change.groupby(["tracker", "versus"], sort=False):
            by = part.set_index("scene")["change"]
            text += (f"| {refined} | {versus} | " + " | ".join(
                f"{100 * by[s]:+.1f}" if s in by.index else "" for s in dict.fromkeys(change["scene"]))
                + f" | {100 * by.mean():+.1f} |\n")
    return text


def tracks_figure(scene: TrackScene, preds: Mapping, out: str | os.PathLike, n_tracks: int = 24, seed: int = 0) -> None:
    """First and last frame of ``scene`` with ground-truth tracks (white) and each tracker's
    (colours), for ``n_tracks`` random query points; one row per tracker."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [k[0] for k in preds]
    T = len(scene.frames)
    pick = np.random.default_rng(seed).choice(len(scene.tracks), size=min(n_tracks, len(scene.tracks)), replace=False)
    fig = Figure(figsize=(7.0, 2.2 * max(1, len(names))))
    FigureCanvasAgg(fig)
    for r, key in enumerate(preds):
        pred, occ = preds[key]
        for c, t in enumerate((0, T - 1)):
            ax = fig.add_subplot(len(names), 2, 2 * r + c + 1)
            ax.imshow(scene.frames[t])
            for i in pick:
                g, p = scene.tracks[i, :t + 1], pred[i, :t + 1]
                ax.plot(g[:, 0], g[:, 1], "-", color="white", lw=0.8)
                ax.plot(p[:, 0], p[:, 1], "-", color="C3", lw=0.8)
                ax.plot(p[-1:, 0], p[-1:, 1], "o" if not occ[i, t] else "x", color="C3", ms=2.5)
            ax.set_axis_off()
            ax.set_title(f"{key[0]}, frame {t}", fontsize=7)
    fig.suptitle(f"{scene.name}: ground truth (white) vs predicted (red; x = predicted occluded)", fontsize=8)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
