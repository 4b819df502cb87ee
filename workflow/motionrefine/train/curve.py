"""The loss-curve TSV: one row per optimiser step, trimmed on resume to the checkpointed steps."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

from motionrefine.core.store import write_atomic


def prepare_tsv(path: Path, columns: Sequence[str], resume_step: int) -> None:
    """Header plus the rows up to ``resume_step`` (rows a killed run logged past its last
    checkpoint are redone, so they are dropped)."""
    rows = []
    if path.exists() and resume_step > 0:
        with open(path, newline="") as f:
            r = csv.reader(f, delimiter="\t")
            if next(r, None) == list(columns):
                rows = [row for row in r if row and int(row[0]) <= resume_step]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(columns)
            w.writerows(rows)

    write_atomic(path, write)


def read_loss_curve(path: str | os.PathLike):
    import pandas as pd

    return pd.read_csv(path, sep="\t")
