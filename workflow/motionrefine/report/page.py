"""The before/after report: one self-contained HTML page, a markdown summary and the wide
before/after table of every run.

Everything shown is read back from the workflow's own outputs (evaluation CSVs, label
stores, loss curves, checkpoints); the only computation is the sample flows, which are
re-run with the pretrained and refined checkpoints so their pictures match the weights
that were evaluated (samples.py). Figures (figures.py) are embedded as base64 PNGs, so the
page displays offline. This module writes the reading, the page and the summary from the
tables (tables.py), figures and provenance (provenance.py).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from motionrefine import __version__
from motionrefine.core.errors import MotionRefineError
from motionrefine.train.curve import read_loss_curve
from motionrefine.report.guard import (agreement_line, display_footage, display_guard, footage_table, guard_table,
                                       read_guards)
from motionrefine.report.teacher import display_teacher, teacher_line, teacher_table
from motionrefine.report.figures import (figure_change, figure_coverage, figure_flows, figure_label_quality,
                                         figure_legend, figure_losses, figure_placeholder)
from motionrefine.report.provenance import provenance
from motionrefine.report.samples import sample_flows
from motionrefine.report.tables import (before_after_table, coverage_table, display_before_after, display_coverage,
                                        display_label_quality, display_role_means, display_seeds, label_quality_table,
                                        load_evals, markdown_table, role_means, seeds_table)
from motionrefine.core.store import write_atomic, write_text_atomic

# Figures of the page that are also written as files (build_report's ``out_figures``), with
# what the placeholder says when there is nothing to draw.
FIGURE_FILES = {"change": "no evaluated scene", "coverage": "no label store", "quality": "no benchmark scene",
                "flows": "no sample flow", "losses": "no loss curve"}

log = logging.getLogger("motionrefine")

ROLE_NOTE = ("Test scenes (benchmarks.<name>.role: test) were looked at for no default: their mean is the figure "
             "to quote. Dev scenes are those the defaults were chosen on (docs/dev-test.md), so their mean may "
             "flatter the method.")


def reading(table: pd.DataFrame, lq: pd.DataFrame, settings: dict) -> str:
    """One paragraph that says what the numbers say, including what got worse."""
    parts = []
    means = role_means(table)
    for proto in table["protocol"].unique():
        rows = means[means["protocol"] == proto]
        if rows.empty:
            parts.append(f"{proto}: no finite EPE change.")
            continue
        # Test scenes first: no default was chosen on them, so theirs is the figure to quote.
        for r in rows.itertuples():
            what = ("the figure to quote" if r.role == "test" else
                    "defaults were chosen on these, so it may flatter the method")
            parts.append(f"{proto.capitalize()}, {r.role} scenes ({r.scenes}; {what}): mean EPE change "
                         f"{r.mean_change_pct:+.2f}% (median {r.median_change_pct:+.2f}%), "
                         f"{r.improved} of {r.scenes} improved.")
    worse = table[table["epe_change_pct"].astype(float) > 0]
    if worse.empty:
        parts.append("No scene got worse.")
    else:
        items = [f"{r.benchmark}/{r.scene} ({r.protocol}, {r.epe_change_pct:+.2f}%)" for r in worse.itertuples()]
        parts.append(f"Got worse: {', '.join(items)}.")
    if not lq.empty and lq["label_epe"].notna().any():
        msg = (f"Kept pseudo-labels cover {100 * lq['kept_fraction'].mean():.1f}% of ground-truth pixels on average "
               f"with EPE {lq['label_epe'].mean():.3f} px")
        if "student_epe_on_kept" in lq and lq["student_epe_on_kept"].notna().any():
            # The comparison that says whether a label can teach: the student on the same pixels.
            better = int((lq["label_epe"] < lq["student_epe_on_kept"]).sum())
            msg += (f", against {lq['student_epe_on_kept'].mean():.3f} px for the student on the same pixels "
                    f"(labels better on {better} of {len(lq)} scenes)")
        elif "pretrained_epe" in lq and lq["pretrained_epe"].notna().any():
            msg += (f", against {lq['pretrained_epe'].mean():.3f} px for the pretrained model over all pixels "
                    "(kept pixels are the easier ones, so this shows the check keeps good flow, not that the labels "
                    "beat the model)")
        parts.append(msg + ".")
    steps = settings.get("steps")
    seeds = int(settings.get("seeds") or 1)
    if seeds > 1:
        parts.append(f"Every run was fine-tuned with {seeds} seeds ({steps if steps is not None else '?'} steps, "
                     f"profile {settings.get('profile', '?')}); the Seeds section gives the spread.")
    else:
        parts.append(f"Every number comes from a single fine-tuning run ({steps if steps is not None else '?'} steps, "
                     f"profile {settings.get('profile', '?')}) and {len(table)} scene evaluations in all; no seed "
                     "variance was measured here (finetune.seeds), so changes of a few percent should not be read as "
                     "significant.")
    return " ".join(parts)


# ------------------------------------------------------------------ page

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


def guard_section(table: pd.DataFrame) -> dict:
    """The guard's verdict per run beside the true EPE change of the weights it judged."""
    return {"title": "Guard", "table": display_guard(table), "line": agreement_line(table),
            "note": "The guard keeps the fine-tuned weights only if their agreement with the teacher on pixel "
                    "blocks held back from training (no ground truth) is better by a bootstrap interval over the "
                    "blocks: the agreement EPE change, refined against pretrained, wholly below −margin (helped); "
                    "otherwise not shown or reverted. Signals pretrained → refined (fine-tuned); "
                    "the true EPE change is that of the unguarded fine-tuned (trained) weights against the "
                    "pretrained ones, mean EPE over the run's ground-truth scenes. Agreed: kept refined and the "
                    "trained EPE is lower, or kept pretrained and it is not."}


def footage_section(table: pd.DataFrame) -> dict:
    """The heldout run's sample videos: did the user's own footage get better?"""
    return {"title": "Your footage", "table": display_footage(table), "line": "",
            "note": "Your videos have no ground truth, so these are the guard's label-free signals per video, "
                    "pretrained → refined (fine-tuned weights of the heldout run): held-back agreement EPE with "
                    "the teacher (lower is better; the guard's decision signal), the forward-backward consistent "
                    "share of pixels and the photometric error of the warp (both reward self-consistent or "
                    "smooth flow, not necessarily correct flow). The agreement change has its bootstrap interval "
                    "over the video's held-back blocks; helped (wholly below 0): the video's deliverable uses the "
                    "refined weights, if the run kept them; not shown (the interval holds 0) or reverted (wholly "
                    "above 0): the pretrained ones."}


def seeds_section(table: pd.DataFrame) -> dict:
    """Seed repeats of every run: the EPE change's mean and spread."""
    return {"title": "Seeds: EPE change mean ± sd", "table": display_seeds(table), "line": "",
            "note": "Every run repeated with finetune.seeds fine-tuning seeds (same labels, different sample "
                    "order, crops and jitter): % EPE change against the pretrained model, mean ± sample sd over "
                    "the seeds, of the fine-tuned (trained) weights and of the guard's choice (refined)."}


def teacher_section(table: pd.DataFrame) -> dict:
    """The label-maker beside the student it teaches: EPE and seconds per pair."""
    return {"title": "Teacher (label-maker) vs student: EPE and cost", "table": display_teacher(table),
            "line": teacher_line(table),
            "note": "The pretrained model at the teacher's settings (upsampled input, more iterations, mirror "
                    "averaging) and at the student's, on every benchmark scene, with measured inference seconds "
                    "per pair and the cost ratio teacher/student; the refined student's EPE (from the evaluation "
                    "above) beside them. The teacher's row is the flow its labels were made from, timed by its "
                    "label-making run (both directions, per direction). Fine-tuning aims at the teacher's EPE at "
                    "the student's cost."}


def _extra_md(extra: Sequence[dict]) -> list[str]:
    out = []
    for sec in extra:
        out += [f"## {sec['title']}", "", sec["note"], "", markdown_table(sec["table"])]
        if sec.get("line"):
            out += [sec["line"], ""]
    return out


def _extra_html(sec: dict, number: int) -> list[str]:
    out = [f"<h2>{number}. {html.escape(sec['title'])}</h2>", f"<p class='note'>{html.escape(sec['note'])}</p>",
           _html_table(sec["table"])]
    if sec.get("line"):
        out.append(f"<p>{html.escape(sec['line'])}</p>")
    return out


def _summary_md(table, lq, cov, prov, text, extra=()) -> str:
    shown = display_before_after(table)
    out = ["# motionrefine report", "",
           f"Generated {prov['date']} · motionrefine {prov['code_version']} · "
           f"pretrained sha256 `{prov['pretrained_sha256']}`", "", "## Reading", "", text, ""]
    out += ["## Before / after", "", "EPE in px; % change negative = better; accuracies and Fl-all in % of pixels.", ""]
    out += ["### Mean EPE change by role", "", ROLE_NOTE, "", markdown_table(display_role_means(role_means(table)))]
    for proto, df in shown.groupby("protocol", sort=False):
        out += [f"### {proto}", "", markdown_table(df.drop(columns=["protocol"]))]
    out += _extra_md(extra)
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


def _html(table, lq, cov, prov, text, figs, extra=()) -> tuple[str, int]:
    """The page and the number of its last section (provenance); ``extra`` follow the before/after."""
    num = iter(range(1, 100))
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
              f"<h2>{next(num)}. Per-scene EPE change</h2>", _img(figs["change"], "per-scene EPE change")]
    parts += ["<h3>Mean EPE change by role</h3>", f"<p class='note'>{html.escape(ROLE_NOTE)}</p>",
              _html_table(display_role_means(role_means(table)))]
    for proto, df in shown.groupby("protocol", sort=False):
        parts += [f"<h3>{html.escape(proto)}</h3>", _html_table(df.drop(columns=["protocol"]))]
    for sec in extra:
        parts += _extra_html(sec, next(num))
    parts += [f"<h2>{next(num)}. Pseudo-label coverage</h2>", _img(figs["coverage"], "label coverage"),
              _html_table(display_coverage(cov)),
              f"<h2>{next(num)}. Label quality against ground truth</h2>",
              "<p class='note'>Kept labels are measured on kept pixels only; the pretrained EPE is over all valid "
              "pixels of the same scene.</p>",
              _img(figs["quality"], "label quality"), _html_table(display_label_quality(lq)),
              f"<h2>{next(num)}. Sample flows (middle pair)</h2>",
              "<p class='note'>Middlebury colour coding, one magnitude scale per row; the keep mask is white where "
              "the pseudo-label passed the cycle check. Colour key:</p>",
              _img(figs["legend"], "flow colour key"), _img(figs["flows"], "sample flows"),
              f"<h2>{next(num)}. Fine-tuning curves</h2>", _img(figs["losses"], "loss curves")]
    last = next(num)
    parts += [f"<h2>{last}. Provenance</h2>",
              f"<pre>{html.escape(json.dumps(prov, indent=1, default=str))}</pre>",
              "</body></html>"]
    return "\n".join(parts), last


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


def ablation_section(table_md: str | os.PathLike, figure_png: str | os.PathLike, number: int = 7) -> tuple[str, str]:
    """The ablation's table.md (+ figure.png) when the ablation has been built."""
    return optional_section(table_md, figure_png, "Ablation (`snakemake ablation`)", number)


def tracking_section(summary_md: str | os.PathLike, figure_png: str | os.PathLike,
                     number: int = 8) -> tuple[str, str]:
    """The tracking comparison's summary.md (+ per-scene δ_avg bars) when it ran, and the figure
    of tracks drawn on frames (``tracks.png``, written beside summary.md by the same rule)."""
    md, page = optional_section(summary_md, figure_png,
                                "Long-range tracking before and after refinement", number)
    tracks = Path(summary_md).with_name("tracks.png")
    if page and tracks.is_file():
        page += _img(base64.b64encode(tracks.read_bytes()).decode("ascii"), "tracks: predicted vs ground truth")
    return md, page


def build_report(evals: list[str], label_quality: str | None, label_stores: list[str], frame_stores: list[str],
                 losses: list[str], refined: list[str], runs: list[str], videos: list[str], pretrained: str,
                 variant: str, iters: int, config: dict, out_html: str, out_summary: str, out_table: str,
                 max_videos: int = 6, device: str = "auto", threads: int = 1,
                 tracking: Sequence[str] | None = None, ablation: Sequence[str] | None = None,
                 guards: Sequence[str] | None = None, teacher_eval: str | None = None,
                 out_figures: dict[str, str] | None = None, out_coverage: str | None = None,
                 roles: dict[str, str] | None = None) -> None:
    """Write the HTML report, the markdown summary and the before/after CSV (see module doc).

    ``runs`` pairs with ``losses`` and ``refined``; ``videos`` with ``label_stores`` and
    ``frame_stores``. ``config`` holds the sections the report shows (model, verify,
    finetune, refine). ``tracking``: (summary.md, delta_avg.png) of the tracking comparison;
    ``ablation``: (table.md, figure.png) of the ablation; each is shown when given and there.
    ``guards``: each run's guard.json (pairs with ``runs``), shown as the Guard section.
    ``teacher_eval``: results/eval/teacher.csv, shown as the teacher-vs-student section.
    ``out_figures``: figure name (a key of :data:`FIGURE_FILES`) -> PNG path, each figure also
    as its own file (Snakemake's --report shows these); one with nothing to draw says so.
    ``out_coverage``: the label coverage table as CSV.
    ``roles``: benchmark -> dev/test (``plan.benchmark_roles``); a benchmark not named is test.
    """
    if len(losses) != len(runs) or len(refined) != len(runs):
        raise MotionRefineError(f"report: {len(runs)} runs but {len(losses)} loss curves and {len(refined)} refined checkpoints")
    if len(label_stores) != len(videos) or len(frame_stores) != len(videos):
        raise MotionRefineError(f"report: {len(videos)} videos but {len(label_stores)} label stores and "
                                f"{len(frame_stores)} frames stores")
    ev = load_evals(evals)
    table = before_after_table(ev, roles)
    lq = label_quality_table(label_quality, ev)
    cov = coverage_table(label_stores)
    curves = {r: read_loss_curve(p) for r, p in zip(runs, losses)}
    prov = provenance(ev, pretrained, runs, refined, config)
    text = reading(table, lq, prov["finetune"])
    samples = sample_flows(videos, frame_stores, label_stores, runs, refined, pretrained, variant, iters,
                           max_videos=max_videos, device=device, threads=threads)
    figs = {"change": figure_change(table), "coverage": figure_coverage(cov), "quality": figure_label_quality(lq),
            "flows": figure_flows(samples), "legend": figure_legend(), "losses": figure_losses(curves)}
    # The CSV travels alone: each row names the checkpoints, scene data and code behind it.
    shas = {r["run"]: r["refined_sha256"] for r in prov["runs"]}
    extra = {"pretrained_sha256": prov["pretrained_sha256"], "refined_sha256": table["run"].map(shas),
             "iters": iters, "code_version": __version__}
    if "scene_sha256" in ev:
        scene_ids = ev.drop_duplicates(["benchmark", "scene"]).set_index(["benchmark", "scene"])["scene_sha256"]
        extra["scene_sha256"] = [scene_ids.get((b, sc)) for b, sc in zip(table["benchmark"], table["scene"])]
    write_atomic(out_table, lambda tmp: table.assign(**extra).to_csv(tmp, index=False))
    for name, path in (out_figures or {}).items():
        if name not in FIGURE_FILES:
            raise MotionRefineError(f"report: unknown figure {name!r} (expected one of {sorted(FIGURE_FILES)})")
        png = base64.b64decode(figs[name] or figure_placeholder(f"nothing to show: {FIGURE_FILES[name]}"))
        write_atomic(path, lambda tmp, png=png: tmp.write_bytes(png))
    if out_coverage is not None:
        write_atomic(out_coverage, lambda tmp: cov.to_csv(tmp, index=False))
    sections = []
    seeds = seeds_table(ev)
    if not seeds.empty and seeds["seeds"].max() > 1:
        sections.append(seeds_section(seeds))
    if guards:
        verdicts = read_guards(guards, runs)
        sections.append(guard_section(guard_table(verdicts, ev)))
        footage = footage_table(verdicts)
        if not footage.empty:
            sections.append(footage_section(footage))
    teach = teacher_table(teacher_eval, ev)
    if not teach.empty:
        sections.append(teacher_section(teach))
    page, last = _html(table, lq, cov, prov, text, figs, sections)
    # The optional sections follow the provenance, numbered on from it.
    trk_md, trk_html = tracking_section(*tracking, number=last + 1) if tracking else ("", "")
    abl_md, abl_html = ablation_section(*ablation, number=last + 1 + bool(trk_html)) if ablation else ("", "")
    write_text_atomic(out_summary, _summary_md(table, lq, cov, prov, text, sections) + trk_md + abl_md)
    write_text_atomic(out_html, page.replace("</body></html>", trk_html + abl_html + "</body></html>"))
    log.info("report: %d runs, %d scene rows, %d sample flows -> %s", len(runs), len(table), len(samples), out_html)
