"""A user's own footage end to end: a sample sheet holding one clip that is not a demo video, nothing
else changed, gives the deliverables; `snakemake infer` applies the refined model to another clip
without training."""

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import zarr

from conftest import SHARED, require_asset
from motionrefine.core.store import sha256_file
from motionrefine.io.flow_formats import read_flo, rescale_flow

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "data" / "tiny_tracking" / "config.yaml"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
# bikes.mp4 is 640x272: the resize scales the two axes differently, so a swapped factor shows.
BIKES = {"start": 4, "end": 28, "stride": 2, "resize": "144x64"}


def run(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--workflow-profile", "none", "--cores", "2",
           "--directory", str(workdir), "--configfile", str(CONFIG), "--replace-workflow-config", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    if check:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def sheet(path: Path, name: str, source: str, start: int, end: int, stride: int, resize: str) -> Path:
    require_asset(SHARED / source)
    path.write_text(f"name\tpath\tstart\tend\tstride\tresize\n{name}\t{source}\t{start}\t{end}\t{stride}\t{resize}\n")
    return path


def planned_jobs(proc: subprocess.CompletedProcess) -> set[str]:
    """Rule names of a dry run's job table."""
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("job ")) + 2
    jobs = set()
    for line in lines[start:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
            break
        jobs.add(parts[0])
    return jobs


def test_sheet_with_one_outside_clip_plans_the_deliverables(tmp_path):
    # The default config, only `samples` changed: the benchmark is textured from the clip itself.
    s = sheet(tmp_path / "my.tsv", "myclip", "data/videos/bikes.mp4", 0, 16, 1, "160")
    cmd = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "-n", "--cores", "2", "--directory",
           str(tmp_path / "w")]
    proc = subprocess.run(cmd + ["--config", f"samples={s}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "results/deliverables/myclip" in proc.stdout and "results/model/model.json" in proc.stdout
    # infer with another weights key than the pretrained one: the clip check is planned, no training.
    infer = subprocess.run(cmd + ["infer", "--config", f"samples={s}", "infer={checkpoint: raft_small_copy}",
                                  "weights={raft_small: weights/raft-small.pth, raft_small_copy: weights/raft-small.pth}"],
                           capture_output=True, text=True, timeout=120)
    assert infer.returncode == 0, infer.stdout[-3000:] + infer.stderr[-3000:]
    jobs = planned_jobs(infer)
    assert {"infer_labels", "infer_check", "inferred_flow", "infer_deliverable"} <= jobs
    assert not jobs & {"finetune", "labels", "guard", "aggregate"}


def test_bad_texture_source_names_the_key(tmp_path):
    s = sheet(tmp_path / "my.tsv", "myclip", "data/videos/bikes.mp4", 0, 16, 1, "160")
    overlay = tmp_path / "o.yaml"
    overlay.write_text("benchmarks:\n  realtex: {kind: real-texture, sources: [myclp]}\n  middlebury: null\n")
    proc = subprocess.run([SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "-n", "--cores", "2", "--directory",
                           str(tmp_path / "w"), "--config", f"samples={s}", "--configfile", str(overlay)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "config key 'benchmarks.realtex.sources': 'myclp' is neither a sample name (myclip)" in (
        proc.stdout + proc.stderr)


@pytest.mark.slow
def test_own_clip_deliverables_and_infer_on_another(tmp_path):
    work = tmp_path / "w"
    s = sheet(tmp_path / "my.tsv", "myclip", "data/videos/bikes.mp4", **BIKES)
    run(work, "--config", f"samples={s}")

    out = work / "results/deliverables/myclip"
    meta = json.loads((out / "meta.json").read_text())
    # The sheet's selection, as source frame indices, and the scale of the resize.
    indices = list(range(BIKES["start"], BIKES["end"], BIKES["stride"]))
    assert meta["frames"]["source_indices"] == indices
    assert meta["resolution"]["source"] == [640, 272] and meta["resolution"]["stored"] == [144, 64]
    assert meta["resolution"]["scale"] == pytest.approx([640 / 144, 272 / 64])
    assert meta["source"]["sha256"] == sha256_file(SHARED / "data/videos/bikes.mp4")

    # The flow of the model the verdict handed this video, at source resolution, equals its stored flow rescaled.
    use = meta["flow"]["model"]
    g = zarr.open_group(str(work / "results/flow/delivered/myclip.zarr"), mode="r")
    assert g.attrs["delivery"]["use"] == use and meta["flow"]["checkpoint_sha256"] == g.attrs["checkpoint_sha256"]
    want = "results/model/raft.pth" if use == "refined" else None
    assert g.attrs["checkpoint_sha256"] == (sha256_file(work / want) if want else sha256_file(SHARED / "weights/raft-small.pth"))
    for t in (0, len(indices) - 2):
        got = read_flo(out / f"flow/flo/fw_{indices[t]:06d}.flo")
        assert got.shape == (272, 640, 2)
        np.testing.assert_allclose(got, rescale_flow(np.asarray(g["flow_fw"][t], np.float32), (640, 272)), atol=1e-4)
    assert len(list((out / "flow/flo").glob("bw_*.flo"))) == len(indices) - 1

    # Tracks in source pixels and source frame indices, with visibility.
    tracks = pd.read_csv(out / "tracks.csv")
    assert set(tracks["frame"]) == set(indices) and set(tracks["visible"]) <= {0, 1}
    # Points may leave the frame, but a visible one lies inside the source frame.
    seen = tracks[tracks["visible"] == 1]
    assert len(seen) > len(tracks) // 2
    assert seen["x"].between(-0.5, 639.5).all() and seen["y"].between(-0.5, 271.5).all()
    assert (out / "tracks.pkl").stat().st_size > 0

    with av.open(str(out / "preview.mp4")) as container:
        frames = [f for f in container.decode(video=0)]
    assert len(frames) == len(indices)

    model = json.loads((work / "results/model/model.json").read_text())
    assert model["flow"]["sha256"] == sha256_file(work / "results/model/raft.pth")

    # The refined model on a second clip: no training, and its meta names the model it got.
    s2 = sheet(tmp_path / "new.tsv", "street", "data/videos/vtest.avi", 0, 9, 1, "96x72")
    args = ["infer", "--config", f"samples={s2}", f"infer={{checkpoint: {work / 'results/model/raft.pth'}}}"]
    dry = run(work, "-n", *args)
    assert not planned_jobs(dry) & {"finetune", "labels", "guard", "aggregate", "track_finetune"}
    run(work, *args)
    meta2 = json.loads((work / "results/infer/street/meta.json").read_text())
    check = json.loads((work / "results/checks/street.json").read_text())
    assert meta2["flow"]["model"] == check["use"] and meta2["flow"]["verdict"]["reason"] == check["reason"]
    want = sha256_file(work / "results/model/raft.pth") if check["use"] == "refined" else sha256_file(
        SHARED / "weights/raft-small.pth")
    assert meta2["flow"]["checkpoint_sha256"] == want
