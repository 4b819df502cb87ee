"""The tracking chain through Snakemake: track labels, tracker fine-tuning, four-tracker comparison."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from motionrefine.models.pips import load_pips

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "data" / "tiny_tracking" / "config.yaml"


@pytest.mark.slow
def test_tracking_chain_end_to_end(tmp_path):
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(ROOT / "Snakefile"),
           "--workflow-profile", "none", "--cores", "2", "--directory", str(tmp_path),
           "--configfile", str(CONFIG), "--replace-workflow-config", "results/tracking/eval.csv"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for video in ("tree", "dog"):
        g = zarr.open_group(str(tmp_path / f"results/labels/tracks/{video}.zarr"), mode="r")
        tracks = g["tracks"][:]
        assert tracks.ndim == 3 and tracks.shape[1:] == (8, 2) and np.isfinite(tracks).all()
        assert g.attrs["checkpoint_sha256"] == "dd3a5d3b102b5886c4081d5f7996117bcc0d93e833e1a9675f057e413dc70fb0"
    model, _ = load_pips(tmp_path / "results/tracking/finetune/refined.pth", "small")
    assert sum(p.numel() for p in model.parameters()) > 0
    ev = pd.read_csv(tmp_path / "results/tracking/eval.csv")
    assert set(ev["tracker"]) == {"chained RAFT (pretrained)", "chained RAFT (refined)",
                                  "tracker (pretrained)", "tracker (refined)"}
    assert set(ev["scene"]) == {"s0"} and ev["checkpoint_sha256"].nunique() == 4
    assert ev["delta_avg"].between(0, 1).all() and ev["survival"].between(0, 1).all()
    assert (tmp_path / "results/tracking/delta_avg.png").stat().st_size > 1000
