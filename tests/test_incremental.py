"""Incremental reruns, provenance and determinism, on one real run of the tiny chain.

The module runs the whole tiny workflow once (frames, flow, labels, a generated scene,
fine-tune, evaluation, report) in its own --directory. Then:

- incremental: a change (one more video, a verify threshold, a video replaced in place) is
  made, `snakemake --dry-run` is parsed, and the exact set of scheduled jobs is asserted;
  every change is undone afterwards, so the tests are independent;
- provenance: every store and result table of the run records the checkpoint sha256, the
  config values it depends on, the code version and the identity of its input;
- determinism: recomputing flow, labels, the benchmark scene and the fine-tune from the
  run's own inputs with the library gives bit-identical arrays and weights (CPU).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dryrun import dry_run_jobs
from conftest import require_asset
from motionrefine import __version__
from motionrefine.bench.scenes import build_realtex_scene, load_flow_scene
from motionrefine.config.schema import validate_config
from motionrefine.flow.evaluate import scene_sha256
from motionrefine.flow.finetune import finetune
from motionrefine.flow.inference import flow_stage
from motionrefine.flow.teacher import TeacherSettings
from motionrefine.flow.labels import make_teacher_labels
from motionrefine.models.checkpoint import load_raft
from motionrefine.config.plan import finetune_settings
from motionrefine.core.store import open_group, sha256_file
from motionrefine.io.video import frames_source

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT.parent / "shared").resolve()
WEIGHTS = SHARED / "weights" / "raft-small.pth"
PINNED = "c7d41b9cc88442bb8aa911dbb33086dac55a226394b142937ff22d5578717332"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SCENE = "tinytex__s0"  # the generated benchmark scene, as a video of the label chain
CONFIG_SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"

pytestmark = [pytest.mark.slow,
              # Snakemake's marker file inside directory() outputs, next to the Zarr arrays.
              pytest.mark.filterwarnings("ignore:Object at .snakemake_timestamp is not recognized")]


@pytest.fixture(autouse=True)
def _shared_assets():
    """A missing asset fails the test naming the file (never a silent skip)."""
    require_asset(WEIGHTS)


class Run:
    """A tiny workflow run: its folder, config, sample sheet and a copy of tree.avi it may replace."""

    def __init__(self, root: Path):
        self.root = root
        self.work = root / "w"
        self.video = root / "tree.avi"
        self.sheet = root / "samples.tsv"
        self.config_path = root / "config.yaml"
        with open(ROOT / "tests/data/tiny/config.yaml") as fh:
            self.config = yaml.safe_load(fh)
        self.config.update({"samples": str(self.sheet), "asset_root": str(SHARED)})
        # The scene is textured from dog only, so replacing tree.avi touches tree's chain alone.
        self.config["benchmarks"]["tinytex"]["sources"] = ["dog"]

    def write_config(self, config: dict | None = None, path: Path | None = None) -> Path:
        path = path or self.config_path
        path.write_text(yaml.safe_dump(config or self.config))
        return path

    def snakemake(self, *args: str, config: Path | None = None) -> str:
        cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(self.work), "--cores", "2",
               "--configfile", str(config or self.config_path), "--replace-workflow-config", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        out = proc.stdout + proc.stderr
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out}")
        return out

    def dry_run(self, config: Path | None = None) -> tuple[dict[str, int], set[tuple[str, str]], str]:
        out = self.snakemake("--dry-run", config=config)
        return job_counts(out), dry_run_jobs(out), out

    def path(self, rel: str) -> Path:
        return self.work / rel


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> job count (without the total)."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    if "Job stats:" not in lines:
        return counts
    for line in lines[lines.index("Job stats:") + 3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts



def reasons(output: str) -> str:
    """Each scheduled job's output and reason, for assertion messages."""
    return "\n".join(ln.strip() for ln in output.splitlines() if ln.strip().startswith(("output:", "reason:")))


def downstream(*extra: tuple[str, str], videos=("tree", "dog")) -> set[tuple[str, str]]:
    """Jobs after the label stage of the heldout run: they follow any change to its labels (the
    delivered flow and deliverables of every sample video and the refined model included)."""
    return {("aggregate", "results/train/heldout.json"), ("finetune", "results/finetune/heldout/trained.pth"),
            ("guard", "results/finetune/heldout/refined.pth"), ("evaluate", "results/eval/heldout.csv"),
            ("report", "results/report/index.html"), ("model", "results/model/raft.pth"),
            *{("delivered_flow", f"results/flow/delivered/{v}.zarr") for v in videos},
            *{("deliverable", f"results/deliverables/{v}") for v in videos}, *extra}


def chain(video: str) -> set[tuple[str, str]]:
    return {("frames", f"results/frames/{video}.zarr"), ("labels", f"results/labels/flow/{video}.zarr")}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    r = Run(tmp_path_factory.mktemp("incremental"))
    shutil.copy2(SHARED / "data/videos/tree.avi", r.video)
    r.sheet.write_text("name\tpath\tstart\tend\tstride\tresize\n"
                       f"tree\t{r.video}\t10\t16\t1\t96x64\n"
                       "dog\tdata/frames/dog_run\t0\t12\t2\t96x64\n")
    r.write_config()
    r.snakemake()
    return r


@pytest.fixture
def keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------ incremental reruns


def test_finished_run_has_nothing_to_do(run):
    counts, jobs, out = run.dry_run()
    assert "Nothing to be done" in out and not counts and not jobs, reasons(out)


def test_default_rerun_triggers_include_params():
    # A changed threshold must rerun its jobs without --forcerun: Snakemake's default triggers
    # include params, and the workflow profile (read on every run) does not narrow them.
    help_text = " ".join(subprocess.run([SNAKEMAKE, "--help"], capture_output=True, text=True).stdout.split())
    start = help_text.rindex("--rerun-triggers {")  # the option's description, not the usage line
    default = help_text[help_text.index("(default:", start):].split(")")[0]
    assert set(default.removeprefix("(default:").split()) >= {"mtime", "params", "input", "code"}
    for profile in (ROOT / "profiles").glob("*/config.yaml"):
        assert "rerun-triggers" not in yaml.safe_load(profile.read_text()), profile


def test_new_video_schedules_only_its_chain_and_what_follows(run):
    original = run.sheet.read_text()
    try:
        run.sheet.write_text(original + f"tree2\t{run.video}\t20\t26\t1\t96x64\n")
        counts, jobs, out = run.dry_run()
    finally:
        run.sheet.write_text(original)
    assert jobs == chain("tree2") | downstream(videos=("tree", "dog", "tree2")), reasons(out)
    assert counts == {"frames": 1, "labels": 1, "aggregate": 1, "finetune": 1, "guard": 1, "evaluate": 1,
                      "delivered_flow": 3, "deliverable": 3, "model": 1, "report": 1, "all": 1}


@pytest.mark.parametrize("section, change", [("verify", {"beta": 0.2}),  # the default is 0.5
                                             ("teacher", {"max_pairs": 2})],  # the label budget
                         ids=["verify-threshold", "label-budget"])
def test_changed_label_setting_reruns_labels_and_after_not_frames_or_flow(run, section, change):
    config = copy.deepcopy(run.config)
    config[section] = {**config.get(section, {}), **change}
    counts, jobs, out = run.dry_run(run.write_config(config, run.root / f"{section}.yaml"))
    labels = {("labels", f"results/labels/flow/{v}.zarr") for v in ("tree", "dog", SCENE)}
    # The scene's labels job rewrites its teacher store, which evaluate_teacher reads.
    assert jobs == labels | downstream(("label_quality", "results/eval/label_quality.csv"),
                                       ("evaluate_teacher", "results/eval/teacher.csv")), reasons(out)
    assert counts == {"labels": 3, "label_quality": 1, "aggregate": 1, "finetune": 1, "guard": 1, "evaluate": 1,
                      "evaluate_teacher": 1, "delivered_flow": 2, "deliverable": 2, "model": 1, "report": 1,
                      "all": 1}
    assert "Params have changed since last execution" in out


def test_video_replaced_in_place_reruns_its_chain(run):
    original, st = run.video.read_bytes(), run.video.stat()
    try:
        # New content (a shorter re-encode is enough for a dry run) and so a new mtime.
        writer = cv2.VideoWriter(str(run.video), cv2.VideoWriter_fourcc(*"MJPG"), 15, (96, 64))
        for i in range(20):
            writer.write(np.full((64, 96, 3), 10 * i, np.uint8))
        writer.release()
        counts, jobs, out = run.dry_run()
    finally:
        run.video.write_bytes(original)
        os.utime(run.video, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert jobs == chain("tree") | downstream(), reasons(out)
    assert counts == {"frames": 1, "labels": 1, "aggregate": 1, "finetune": 1, "guard": 1, "evaluate": 1,
                      "delivered_flow": 2, "deliverable": 2, "model": 1, "report": 1, "all": 1}
    assert f"Updated input files: {run.video}" in out


# ------------------------------------------------------------------ provenance


def attrs(run: Run, rel: str) -> dict:
    return dict(open_group(run.path(rel)).attrs)


def test_frames_stores_record_their_source(run):
    tree = attrs(run, "results/frames/tree.zarr")
    assert tree["source_path"] == str(run.video) and tree["source_sha256"] == sha256_file(run.video)
    assert tree["frame_indices"] == list(range(10, 16)) and tree["resize"] == "96x64"
    assert tree["code_version"] == __version__
    dog = attrs(run, "results/frames/dog.zarr")
    assert dog["source_path"] == str(SHARED / "data/frames/dog_run") and len(dog["source_listing_sha256"]) == 64
    assert dog["frame_indices"] == [0, 2, 4, 6, 8, 10] and dog["code_version"] == __version__
    scene = attrs(run, f"results/frames/{SCENE}.zarr")
    assert scene["source"] == {"path": "results/scenes/tinytex/s0.zarr", "benchmark": "tinytex", "scene": "s0",
                               "kind": "real-texture"}
    assert scene["code_version"] == __version__


def test_benchmark_scene_records_seed_settings_and_sources(run):
    a = attrs(run, "results/scenes/tinytex/s0.zarr")
    assert a["seed"] == 0 and a["preset"] == "nonrigid_mild" and a["code_version"] == __version__
    assert (a["config"]["height"], a["config"]["width"], a["config"]["frames"]) == (64, 96, 4)
    assert a["sources"] == ["results/frames/dog.zarr"]
    assert a["source_identities"] == [frames_source(attrs(run, "results/frames/dog.zarr"))]


@pytest.mark.parametrize("video", ["tree", "dog", SCENE])
def test_flow_and_label_stores_record_checkpoint_settings_and_input(run, video):
    identity = frames_source(attrs(run, f"results/frames/{video}.zarr"))
    assert identity  # never the empty dict
    if video != SCENE:  # the delivered flow is made for the sample videos, with the weights their verdict chose
        flow = attrs(run, f"results/flow/delivered/{video}.zarr")
        weights = WEIGHTS if flow["delivery"]["use"] == "pretrained" else run.path("results/finetune/heldout/refined.pth")
        assert flow["checkpoint_sha256"] == sha256_file(weights) and flow["checkpoint"] == str(weights)
        assert (flow["model"], flow["iters"], flow["padding"], flow["teacher"]) == ("raft-small", 4, "even", None)
        assert flow["frames_source"] == identity and flow["code_version"] == __version__
    lab = attrs(run, f"results/labels/flow/{video}.zarr")
    teacher = lab["flow_store"]  # the teacher ran inside the labels job
    assert teacher["fused"] is True and teacher["checkpoint"] == str(WEIGHTS)
    assert teacher["iters"] == 6 and teacher["teacher"]["scales"] == [2.0] and teacher["teacher"]["flip"] is True
    assert lab["label_budget"]["labelled"] == lab["pairs"] == lab["labelled_pairs"]
    assert lab["checkpoint_sha256"] == PINNED and lab["code_version"] == __version__
    assert lab["thresholds"] == {"alpha": 0.002, "beta": 0.5, "colour": 0.02, "max_flow": 400, "colour_norm": "raw"}
    assert lab["checks"] == "fb+colour" and lab["speed_bins"] == [0, 1, 2, 4.5]
    assert lab["frames_store"]["source"] == identity and len(lab["frames_store"]["fingerprint"]) == 64
    assert lab["flow_store"]["iters"] == 6 and lab["flow_store"]["teacher"]["scales"] == [2.0]
    assert lab["flow_store"]["code_version"] == __version__


def test_training_set_and_finetune_record_checkpoint_settings_and_input(run):
    index = json.loads(run.path("results/train/heldout.json").read_text())
    assert index["checkpoint_sha256"] == PINNED and index["code_version"] == __version__
    assert [v["video"] for v in index["videos"]] == ["tree", "dog"]
    (summary_path,) = run.path("results/finetune/heldout").glob("work-*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["init_sha256"] == PINNED and summary["code_version"] == __version__
    assert (summary["config"]["steps"], summary["config"]["iters"], summary["steps_done"]) == (2, 2, 2)
    assert summary["final_sha256"] == sha256_file(run.path("results/finetune/heldout/trained.pth"))


def test_eval_and_report_tables_record_checkpoints_settings_code_and_scene(run):
    refined = sha256_file(run.path("results/finetune/heldout/refined.pth"))
    scene = load_flow_scene("real-texture", "s0", str(run.path("results/scenes/tinytex/s0.zarr")), "tinytex")
    ev = pd.read_csv(run.path("results/eval/heldout.csv"))
    trained = sha256_file(run.path("results/finetune/heldout/trained.pth"))
    assert ev.set_index("model")["checkpoint_sha256"].to_dict() == {"pretrained": PINNED, "trained": trained,
                                                                    "refined": refined}
    assert set(ev["iters"]) == {4} and set(ev["variant"]) == {"small"} and set(ev["code_version"]) == {__version__}
    assert set(ev["scene_sha256"]) == {scene_sha256(scene)} and set(ev["scene"]) == {"s0"}

    table = pd.read_csv(run.path("results/report/before_after.csv"))
    row = table.iloc[0]
    assert (row["pretrained_sha256"], row["refined_sha256"]) == (PINNED, refined)
    assert (row["iters"], row["code_version"], row["scene_sha256"]) == (4, __version__, scene_sha256(scene))
    md = run.path("results/report/summary.md").read_text()
    assert f"pretrained: `{WEIGHTS}` sha256 `{PINNED}`" in md
    assert f"refined [heldout]: sha256 `{refined}` (evaluated file matches: True)" in md
    assert '"beta": 0.5' in md and '"steps": 2' in md and f"code version {__version__}" in md
    html = run.path("results/report/index.html").read_text()
    assert PINNED in html and refined in html


# ------------------------------------------------------------------ determinism


def same_store(a: Path, b: Path) -> None:
    ga, gb = open_group(a), open_group(b)
    names = sorted(k for k, _ in ga.arrays())
    assert names == sorted(k for k, _ in gb.arrays())
    for name in names:
        x, y = ga[name][...], gb[name][...]
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), f"{name} differs"  # bit-identical, NaN included


def test_flow_and_labels_are_bit_identical_when_recomputed(run, tmp_path, keep_torch_threads):
    frames = run.path("results/frames/tree.zarr")
    delivered = run.path("results/flow/delivered/tree.zarr")
    refined = open_group(delivered).attrs["delivery"]["use"] == "refined"
    weights = run.path("results/finetune/heldout/refined.pth") if refined else WEIGHTS
    flow_stage(str(frames), str(tmp_path / "flow.zarr"), str(weights), iters=4, batch_size=2, threads=1,
               expected_sha256=None if refined else PINNED, device="cpu", progress=False)
    same_store(delivered, tmp_path / "flow.zarr")
    v = validate_config(copy.deepcopy(run.config), CONFIG_SCHEMA)["verify"]  # as rule labels passes them
    verify = {k: v[k] for k in ("alpha", "beta", "colour", "max_flow", "checks", "speed_bins")}
    teacher = TeacherSettings(scales=(2.0,), iters=6, flip=True)  # the tiny config's teacher
    for video in ("tree", "dog", SCENE):
        out = tmp_path / f"labels_{video}.zarr"
        make_teacher_labels(str(run.path(f"results/frames/{video}.zarr")), str(out), str(WEIGHTS), teacher,
                            batch_size=2, threads=1, expected_sha256=PINNED, device="cpu", **verify)
        same_store(run.path(f"results/labels/flow/{video}.zarr"), out)


def test_benchmark_scene_is_bit_identical_from_its_seed(run, tmp_path):
    out = tmp_path / "s0.zarr"
    build_realtex_scene([str(run.path("results/frames/dog.zarr"))], str(out), preset="nonrigid_mild", height=64,
                        width=96, frames=4, seed=0)
    same_store(run.path("results/scenes/tinytex/s0.zarr"), out)


def test_finetune_gives_the_same_weights_as_the_workflow(run, tmp_path, keep_torch_threads):
    config = validate_config(copy.deepcopy(run.config), CONFIG_SCHEMA)
    settings = dict(finetune_settings(config), threads=1)  # as rule finetune passes them (1 thread here)
    summary = finetune(settings, run.path("results/train/heldout.json"), WEIGHTS, tmp_path / "ft",
                       expected_sha256=PINNED)
    ours = load_raft(summary["final"])[0].state_dict()
    theirs = load_raft(run.path("results/finetune/heldout/trained.pth"))[0].state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert summary["final_sha256"] == hashlib.sha256(run.path("results/finetune/heldout/trained.pth")
                                                     .read_bytes()).hexdigest()


# ------------------------------------------------------------------ Snakemake's report, benchmarks, exports


def test_snakemake_report_holds_captions_and_figures(run, tmp_path):
    import zipfile

    out = tmp_path / "report.zip"
    run.snakemake("--report", str(out))
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        page = z.read("report/report.html").decode("utf-8")
    files = {Path(n).name for n in names if n.startswith("report/data/raw/")}
    # Every report() output of the tiny run: figures, tables, and the project's own page.
    assert {"epe_change.png", "sample_flows.png", "label_coverage.png", "label_quality.png", "loss_curves.png",
            "before_after.csv", "heldout.csv", "teacher.csv", "label_quality.csv", "label_coverage.csv",
            "index.html"} <= files, names
    for png in ("epe_change.png", "loss_curves.png"):
        (member,) = [n for n in names if n.endswith("/" + png)]
        assert zipfile.ZipFile(out).read(member)[:8] == b"\x89PNG\r\n\x1a\n"
    # The captions (workflow/report/*.rst), rendered: the global description with the config's
    # model, and a caption with the run's wildcard filled in.
    assert "motionrefine refines a pretrained optical-flow model (RAFT-small" in page
    assert "Evaluation table of run <strong>heldout</strong>" in page
    assert "Per-scene EPE change after refinement, in %" in page
    assert "Pseudo-labels of each benchmark scene against its ground truth" in page


def test_benchmark_files_of_every_job_and_their_summary(run):
    counts = {"frames": 2, "delivered_flow": 2, "deliverable": 2, "model": 1, "labels": 3, "benchmark_scene": 1,
              "scene_frames": 1, "aggregate": 1, "finetune": 1, "guard": 1, "evaluate": 1, "evaluate_teacher": 1, "label_quality": 1,
              "report": 1}
    bench = run.path("results/benchmarks")
    found = {d.name: len(list(d.rglob("*.tsv"))) for d in bench.iterdir()}
    # (export_flow and the refined model's flow too when the export test ran first.)
    assert {r: found.get(r) for r in counts} == counts and set(found) <= set(counts) | {"export_flow", "flow"}, found
    proc = subprocess.run([sys.executable, str(ROOT / "tools/benchmark_summary.py"), "--dir", str(run.work),
                           "--configfile", str(run.config_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {ln.split()[0]: ln.split() for ln in proc.stdout.splitlines()[1:]}
    assert set(counts) <= set(rows)
    for rule, n in counts.items():
        wall_max, rss, mem = float(rows[rule][3]), float(rows[rule][4]), rows[rule][5]
        assert int(rows[rule][1]) == n and wall_max > 0 and rss > 0 and mem == "1000", rows[rule]


def test_export_target_writes_the_refined_flow_in_every_format(run):
    from motionrefine.io.flow_formats import read_kitti_flow, read_npy_flow

    run.snakemake("export")
    for video in ("tree", "dog"):
        store = open_group(run.path(f"results/flow/refined-heldout/{video}.zarr"))
        fw, bw = store["flow_fw"][...], store["flow_bw"][...]
        base = run.path(f"results/export/refined-heldout/{video}")
        for t in range(len(fw)):
            # OpenCV's own reader agrees with the store bit for bit.
            np.testing.assert_array_equal(cv2.readOpticalFlow(str(base.with_suffix(".flo") / f"fw_{t:06d}.flo")), fw[t])
            np.testing.assert_array_equal(read_npy_flow(base.with_suffix(".npy") / f"bw_{t:06d}.npy"), bw[t])
            flow, valid = read_kitti_flow(base.with_suffix(".kitti-png") / f"fw_{t:06d}.png")
            assert valid.all() and np.abs(flow - fw[t]).max() <= 1 / 64  # stored in 1/64 px steps
    # Tracking is off in the tiny config: no track export is planned.
    assert not run.path("results/export/tracks").exists()
