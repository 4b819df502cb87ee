"""The teacher as a baseline in the report: per benchmark scene, the EPE and seconds per pair of
the pretrained model at the teacher's settings (the label-maker) and at the student's, the
cost ratio, and the refined student's EPE beside them (from the evaluation rows).

A refined student near the teacher's EPE at the student's cost is what fine-tuning is for;
read from results/eval/teacher.csv (rule evaluate_teacher).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from motionrefine.core.errors import MotionRefineError
from motionrefine.flow.evaluate import TEACHER_COLUMNS
from motionrefine.config.plan import protocol_of
from motionrefine.report.tables import fmt_number


def teacher_table(path: str | None, evals: pd.DataFrame) -> pd.DataFrame:
    """One row per scene: student and teacher EPE and s/pair, cost ratio teacher/student, and
    the refined student's EPE per protocol (heldout, transductive) where evaluated."""
    if not path or not Path(path).is_file():
        return pd.DataFrame()
    df = pd.read_csv(path)
    missing = [c for c in TEACHER_COLUMNS if c not in df.columns]
    if missing:
        raise MotionRefineError(f"{path}: not a teacher evaluation table (missing columns {missing})")
    df["scene"] = df["scene"].astype(str)
    df["benchmark"] = df["benchmark"].fillna("").astype(str)
    keys = ["benchmark", "scene"]
    wide = df.pivot_table(index=keys, columns="model", values=["epe", "seconds_per_pair"], aggfunc="first",
                          sort=False)
    out = pd.DataFrame(index=wide.index)
    for model in ("student", "teacher"):
        for metric in ("epe", "seconds_per_pair"):
            out[f"{metric}_{model}"] = wide[(metric, model)] if (metric, model) in wide.columns else np.nan
    out["cost_ratio"] = out["seconds_per_pair_teacher"] / out["seconds_per_pair_student"]
    refined = evals[evals["model"] == "refined"].assign(protocol=lambda e: e["run"].map(protocol_of))
    for proto in ("heldout", "transductive"):
        epe = refined[refined["protocol"] == proto].groupby(keys)["epe"].first()
        out[f"epe_refined_{proto}"] = epe.reindex(out.index)
    return out.reset_index()


def teacher_line(table: pd.DataFrame) -> str:
    """How often the teacher beats the student it labels for, and at what cost."""
    ok = table.dropna(subset=["epe_student", "epe_teacher"])
    if ok.empty:
        return ""
    better = int((ok["epe_teacher"] < ok["epe_student"]).sum())
    ratio = table["cost_ratio"].replace([np.inf, -np.inf], np.nan).dropna()
    cost = f"; it costs {ratio.median():.1f}x the student per pair (median)" if not ratio.empty else ""
    return f"The teacher's EPE is lower than the student's on {better} of {len(ok)} scenes{cost}."


def display_teacher(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table
    epe = lambda x: fmt_number(x, ".3f")  # noqa: E731
    return pd.DataFrame({
        "benchmark": table["benchmark"], "scene": table["scene"],
        "student EPE": table["epe_student"].map(epe), "teacher EPE": table["epe_teacher"].map(epe),
        "refined EPE (heldout)": table["epe_refined_heldout"].map(epe),
        "refined EPE (transductive)": table["epe_refined_transductive"].map(epe),
        "student s/pair": table["seconds_per_pair_student"].map(lambda x: fmt_number(x, ".3f")),
        "teacher s/pair": table["seconds_per_pair_teacher"].map(lambda x: fmt_number(x, ".3f")),
        "cost teacher/student": table["cost_ratio"].map(lambda x: fmt_number(x, ".1f")),
    })
