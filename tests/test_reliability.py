"""Reliability: bad input, faults, and what a failed or killed job leaves behind.

Every case writes its own broken input and checks two things: one error that names the
file or key at fault, and no output that a later run (or Snakemake) would take as complete.
Cases already covered elsewhere are not repeated here: the sample sheet rows
(test_config.py), stray/corrupt/size-changing frame-folder images, truncated mp4 and
one-frame videos (test_video.py), missing/wrong-key/sha-mismatched checkpoints
(test_raft.py), pairs flagged non-finite by the flow stage (test_cycle.py).
docs/errors.md lists every message.
"""
from __future__ import annotations

import base64
import contextlib
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from zarr.storage import LocalStore

from dryrun import dry_run_jobs
from conftest import require_asset
from motionrefine.core.errors import AssetMissingError, CheckpointError, StoreWriteError, VideoError
from motionrefine.flow.finetune import finetune
from motionrefine.train.curve import read_loss_curve
from motionrefine.train.state import list_checkpoints
from motionrefine.flow.inference import FlowEstimator, flow_stage
from motionrefine.flow.labels import aggregate_labels, load_training_pairs, make_flow_labels
from motionrefine.models.checkpoint import load_raft, read_state_dict
from motionrefine.models.raft import RAFT
from motionrefine.core.store import atomic_group, open_group, write_array
from motionrefine.io.video import extract_frames

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT.parent / "shared").resolve()
WEIGHTS = SHARED / "weights" / "raft-small.pth"
TREE = SHARED / "data" / "videos" / "tree.avi"
DOG = SHARED / "data" / "frames" / "dog_run"
PINNED = "c7d41b9cc88442bb8aa911dbb33086dac55a226394b142937ff22d5578717332"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
NON_FINITE = 3  # column of "non_finite" in the labels' rejected table (cycle.REASONS)

@pytest.fixture(autouse=True)
def _shared_assets():
    """A missing asset fails the test naming the file (never a silent skip)."""
    for path in (WEIGHTS, DOG):
        require_asset(path)


def assert_nothing_left(out: Path) -> None:
    """No store and no half-written temporary sibling."""
    assert not out.exists(), f"{out} exists after a failure"
    leftovers = list(out.parent.glob(f".{out.name}.tmp*")) if out.parent.exists() else []
    assert not leftovers, leftovers


@pytest.fixture
def keep_torch_threads():
    # flow_stage/finetune set torch's thread count for the process; give the session its own back.
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def dog_frames(path: Path, n: int = 5) -> Path:
    extract_frames(DOG, path, end=n, resize="96x64")
    return path


def static_scene(root: Path, n: int) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """n copies of one real frame and zero flow: every pixel verifies, so every keep chunk is written."""
    frame = np.asarray(open_group(dog_frames(root / "src.zarr", 2))["frames"][0])
    with atomic_group(root / "frames.zarr") as g:
        write_array(g, "frames", np.stack([frame] * n))
    fw = np.zeros((n - 1, 64, 96, 2), np.float32)
    return root / "frames.zarr", root / "flow.zarr", fw, fw.copy()


def write_flow(path: Path, fw: np.ndarray, bw: np.ndarray) -> Path:
    with atomic_group(path) as g:
        write_array(g, "flow_fw", fw)
        write_array(g, "flow_bw", bw)
    return path


# ------------------------------------------------------------------ bad videos and frame folders


@pytest.mark.parametrize("name, content", [("garbage.avi", np.random.default_rng(0).bytes(5000)),
                                           ("empty.mp4", b"")], ids=["garbage", "empty"])
def test_unreadable_video_file(tmp_path, name, content):
    src = tmp_path / name
    src.write_bytes(content)
    out = tmp_path / "out.zarr"
    with pytest.raises(VideoError, match=rf"{name}: cannot open video \(corrupt, truncated or unsupported"):
        extract_frames(src, out)
    assert_nothing_left(out)


def test_zero_frame_video(tmp_path):
    src = tmp_path / "zero.avi"
    cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32)).release()  # header, no frames
    out = tmp_path / "out.zarr"
    with pytest.raises(VideoError, match=r"zero\.avi: 0 frame\(s\) selected .* at least 2 are needed"):
        extract_frames(src, out)
    assert_nothing_left(out)


def test_truncated_avi(tmp_path, caplog):
    data = TREE.read_bytes()
    src = tmp_path / "tree_cut.avi"
    src.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.zarr"
    with pytest.raises(VideoError, match=r"tree_cut\.avi: video ends after \d+ frames but end=60 was requested"):
        extract_frames(src, out, end=60, resize="32x24")
    assert_nothing_left(out)
    # Without `end`, AVI's overstated frame count cannot tell truncation apart: a warning, and
    # the frames that decode (documented in docs/errors.md).
    with caplog.at_level(logging.WARNING, logger="motionrefine"):
        attrs = extract_frames(src, out, start=30, resize="32x24")
    assert "container header says 444 frames, but the stream decodes to 36" in caplog.text
    assert attrs["frame_indices"][0] == 30 and len(attrs["frame_indices"]) >= 2


def png_folder(folder: Path, names: list[str]) -> Path:
    folder.mkdir()
    for i, n in enumerate(names):
        cv2.imwrite(str(folder / n), np.full((16, 24, 3), 30 * i, np.uint8))
    return folder


@pytest.mark.parametrize("names, pattern", [([], r"0 frame\(s\) selected"), (["0001.png"], r"1 frame\(s\) selected")])
def test_folder_with_too_few_frames(tmp_path, names, pattern):
    folder = png_folder(tmp_path / "frames", names)
    out = tmp_path / "out.zarr"
    with pytest.raises(VideoError, match=rf"frames: {pattern} .* at least 2"):
        extract_frames(folder, out)
    assert_nothing_left(out)


def test_folder_with_a_subfolder(tmp_path):
    folder = png_folder(tmp_path / "frames", ["0001.png", "0002.png"])
    (folder / "more").mkdir()
    out = tmp_path / "out.zarr"
    with pytest.raises(VideoError, match=r"frames/more: not an image file in frame folder"):
        extract_frames(folder, out)
    assert_nothing_left(out)


# ------------------------------------------------------------------ bad checkpoints


def test_checkpoint_with_one_wrong_shape(tmp_path):
    state = RAFT("small").state_dict()
    key = "fnet.conv1.weight"
    state[key] = torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])
    path = tmp_path / "reshaped.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    with pytest.raises(CheckpointError) as info:
        load_raft(path, "small")
    msg = str(info.value)
    assert f"checkpoint {path} does not fit RAFT: 1 shape mismatches (e.g. {key}: checkpoint (" in msg
    assert "missing" not in msg and "unexpected" not in msg


def test_checkpoint_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(CheckpointError, match=r"list\.pth is not a state_dict of tensors"):
        load_raft(path)


def test_checkpoint_path_is_a_folder(tmp_path):
    (tmp_path / "raft-small.pth").mkdir()
    with pytest.raises(CheckpointError, match=r"checkpoint .*raft-small\.pth is not a file"):
        load_raft(tmp_path / "raft-small.pth")


def test_unreadable_checkpoint():
    # A world-traversable folder, so an unprivileged user reaches the file and is refused by its mode.
    folder = Path(tempfile.mkdtemp(prefix="mr-unreadable-"))
    try:
        folder.chmod(0o755)
        path = folder / "raft-small.pth"
        path.write_bytes(b"not read")
        path.chmod(0)
        as_root = os.geteuid() == 0
        if as_root:  # root reads any file: drop to nobody for the read
            os.setegid(65534)
            os.seteuid(65534)
        try:
            with pytest.raises(CheckpointError, match=rf"checkpoint {path} cannot be read: Permission denied"):
                read_state_dict(path)
        finally:
            if as_root:
                os.seteuid(0)
                os.setegid(0)
    finally:
        (folder / "raft-small.pth").unlink(missing_ok=True)
        folder.rmdir()


def test_flow_stage_refuses_unpinned_weights_and_writes_nothing(tmp_path, keep_torch_threads):
    frames = dog_frames(tmp_path / "frames.zarr", 3)
    out = tmp_path / "flow.zarr"
    with pytest.raises(CheckpointError, match=rf"has sha256 {PINNED}, but the config pins 0{{64}}"):
        flow_stage(str(frames), str(out), str(WEIGHTS), expected_sha256="0" * 64, device="cpu", progress=False)
    assert_nothing_left(out)


# ------------------------------------------------------------------ NaN / inf flow


def test_nonfinite_model_output_is_counted_and_never_labelled(tmp_path, monkeypatch, keep_torch_threads):
    frames = dog_frames(tmp_path / "frames.zarr", 5)
    real_pairs = FlowEstimator.pairs

    def poisoned(self, fr, backward=True):
        fw, bw = real_pairs(self, fr, backward)
        fw[1, 10, 20, 0] = np.nan  # one NaN in forward pair 1
        bw[3, 5:7, 5:7, 1] = np.inf  # four inf in backward pair 3
        return fw, bw

    monkeypatch.setattr(FlowEstimator, "pairs", poisoned)
    flow = tmp_path / "flow.zarr"
    summary = flow_stage(str(frames), str(flow), str(WEIGHTS), iters=2, batch_size=4, device="cpu", progress=False)
    g = open_group(flow)
    assert summary["nonfinite"] == 5 and g.attrs["nonfinite_values"] == 5
    assert g["pair_finite"][:].tolist() == [True, False, True, False]
    assert np.isfinite(g["flow_fw"][:]).all() and np.isfinite(g["flow_bw"][:]).all()  # stored as zeros, flagged

    labels = tmp_path / "labels.zarr"
    make_flow_labels(str(frames), str(flow), str(labels))
    lab = open_group(labels)
    h, w = 64, 96
    for p in (1, 3):  # which pixels were bad is unknown downstream: the whole pair goes, both directions
        assert not lab["keep"][p].any() and not lab["keep_bw"][p].any()
        assert lab["rejected"][p, NON_FINITE] == h * w and lab["kept_fraction"][p] == 0
    assert lab["rejected"][0, NON_FINITE] == 0 and lab["rejected"][2, NON_FINITE] == 0
    assert np.isfinite(lab["flow"][:]).all() and np.isfinite(lab["flow_bw"][:]).all()
    assert lab.attrs["non_finite_pairs"] == 2

    index = tmp_path / "train.json"
    aggregate_labels([str(labels)], [str(frames)], str(index))
    assert {p.pair for p in load_training_pairs(index)} <= {0, 2}


def test_nonfinite_pixels_in_an_unflagged_flow_store(tmp_path):
    # A flow store without pair_finite (written by other tools): bad pixels are rejected one by one.
    frames, flow, fw, bw = static_scene(tmp_path, 3)
    fw[0, 10, 10, 0] = np.nan
    bw[0, 30, 40, 1] = np.inf
    fw[1, 50, 50] = -np.inf
    write_flow(flow, fw, bw)
    out = tmp_path / "labels.zarr"
    make_flow_labels(str(frames), str(flow), str(out))
    g = open_group(out)
    # A bad backward vector taints the forward pixels that sample it: bilinear sampling may reach
    # a neighbour too, so each bad pixel rejects itself and at most its 3x3 neighbourhood.
    bad = {0: [(10, 10), (30, 40)], 1: [(50, 50)]}
    for p, pixels in bad.items():
        near = np.zeros((64, 96), bool)
        for y, x in pixels:
            near[y - 1:y + 2, x - 1:x + 2] = True
        for key in ("keep", "keep_bw"):
            rejected = ~g[key][p]
            assert all(rejected[y, x] for y, x in pixels) and not (rejected & ~near).any(), (key, p)
        assert g["rejected"][p, NON_FINITE] == (~g["keep"][p]).sum() and g["rejected"][p, :NON_FINITE].sum() == 0
    assert np.isfinite(g["flow"][:]).all() and np.isfinite(g["flow_bw"][:]).all()


# ------------------------------------------------------------------ full disk


def test_file_size_limit_during_a_zarr_write(tmp_path):
    # A real EFBIG from the kernel: the writer runs under RLIMIT_FSIZE with SIGXFSZ ignored.
    out = tmp_path / "tree.zarr"
    child = textwrap.dedent(f"""
        import json, resource, signal
        from motionrefine.core.errors import StoreWriteError
        from motionrefine.io.video import extract_frames
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))  # a 320x240 frame chunk is larger
        try:
            extract_frames({str(TREE)!r}, {str(out)!r}, end=6)
        except StoreWriteError as e:
            print(json.dumps({{"errno": e.errno, "filename": e.filename, "message": str(e)}}))
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    err = json.loads(proc.stdout.strip().splitlines()[-1])
    assert err["errno"] == errno.EFBIG and err["filename"] == str(out)
    assert err["message"] == f"[Errno {errno.EFBIG}] File too large while writing Zarr store: '{out}'"
    assert_nothing_left(out)


def test_disk_full_midway_through_a_label_store(tmp_path, monkeypatch):
    frames, flow, fw, bw = static_scene(tmp_path, 4)
    write_flow(flow, fw, bw)
    real_set = LocalStore.set
    chunks = []

    async def filling_disk(self, key, value):
        if "/c/" in key:  # a chunk (metadata is zarr.json)
            if len(chunks) == 3:  # three chunks fit, then the disk is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            chunks.append(key)
        return await real_set(self, key, value)

    monkeypatch.setattr(LocalStore, "set", filling_disk)
    out = tmp_path / "labels" / "dog.zarr"
    with pytest.raises(StoreWriteError) as info:
        make_flow_labels(str(frames), str(flow), str(out), batch_size=1)
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == f"[Errno {errno.ENOSPC}] No space left on device while writing Zarr store: '{out}'"
    assert len(chunks) == 3  # it failed midway, after real chunks were written
    assert_nothing_left(out)


# ------------------------------------------------------------------ killed jobs


def start(cmd: list[str], log: Path, **kw) -> subprocess.Popen:
    """A background process with its output in ``log`` (a pipe nobody reads could block it)."""
    with open(log, "w") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, **kw)


def wait_for(predicate, proc: subprocess.Popen, log: Path, what: str, timeout: float = 240.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        found = predicate()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"process ended ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def training_set(tmp_path_factory):
    """Real labels: 5 dog_run frames at 96x64 through RAFT-small, verified, indexed."""
    root = tmp_path_factory.mktemp("train")
    n = torch.get_num_threads()
    frames = dog_frames(root / "frames" / "dog.zarr", 5)
    flow_stage(str(frames), str(root / "flow" / "dog.zarr"), str(WEIGHTS), iters=12, device="cpu", progress=False)
    torch.set_num_threads(n)
    make_flow_labels(str(frames), str(root / "flow" / "dog.zarr"), str(root / "labels" / "dog.zarr"))
    index = root / "train.json"
    aggregate_labels([str(root / "labels" / "dog.zarr")], [str(frames)], str(index))
    return index


FT = {"steps": 8, "batch_size": 2, "iters": 2, "augment": {"crop": [64, 96]}, "checkpoint_every": 2,
      "keep_checkpoints": 10, "device": "cpu", "threads": 1}


@pytest.mark.slow
def test_finetune_killed_mid_run_resumes_to_the_same_weights(training_set, tmp_path, keep_torch_threads):
    out = tmp_path / "killed"
    child = (f"import json, sys; from motionrefine.flow.finetune import finetune; "
             f"finetune(json.loads(sys.argv[1]), sys.argv[2], {str(WEIGHTS)!r}, sys.argv[3])")
    log = tmp_path / "child.log"
    proc = start([sys.executable, "-c", child, json.dumps(FT), str(training_set), str(out)], log)
    wait_for(lambda: list_checkpoints(out / "checkpoints"), proc, log, "the first checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = [s for s, _ in list_checkpoints(out / "checkpoints")]
    assert done and done[-1] < FT["steps"] and not (out / "final.pth").exists()

    resumed = finetune(FT, training_set, WEIGHTS, out)
    assert resumed["resumed_from"] == done[-1] and resumed["steps_done"] == FT["steps"] and resumed["completed"]
    # Steps logged after the last checkpoint by the killed run are redone, not duplicated.
    assert read_loss_curve(out / "loss.tsv")["step"].tolist() == list(range(1, FT["steps"] + 1))

    straight = finetune(FT, training_set, WEIGHTS, tmp_path / "straight")
    a, b = load_raft(resumed["final"])[0].state_dict(), load_raft(straight["final"])[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical on the CPU
    assert resumed["final_sha256"] == straight["final_sha256"]


@pytest.mark.slow
def test_label_job_killed_mid_write_leaves_nothing_finished(tmp_path):
    frames, flow, fw, bw = static_scene(tmp_path, 5)
    write_flow(flow, fw, bw)
    out = tmp_path / "labels" / "dog.zarr"
    args = (str(frames), str(flow), str(out))
    # The child verifies slowly, so the kill lands while the store is half written.
    child = textwrap.dedent(f"""
        import time
        from motionrefine.flow import labels
        real = labels.verify_flow
        def slow(*a, **k):
            time.sleep(0.5)
            return real(*a, **k)
        labels.verify_flow = slow
        labels.make_flow_labels(*{args!r}, batch_size=1)
    """)
    log = tmp_path / "child.log"
    proc = start([sys.executable, "-c", child], log)
    tmp = wait_for(lambda: [p for p in out.parent.glob(".dog.zarr.tmp-*") if (p / "keep" / "c").exists()],
                   proc, log, "the first label chunk")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and tmp[0].exists()  # only the hidden temporary, never the store's name
    with pytest.raises(AssetMissingError, match=rf"Zarr store not found: {out}"):
        aggregate_labels([str(out)], [str(frames)], str(tmp_path / "train.json"))
    assert not (tmp_path / "train.json").exists()

    make_flow_labels(*args)  # the rerun writes the whole store and clears the killed run's leftovers
    assert open_group(out)["keep"].shape == (4, 64, 96)
    assert not list(out.parent.glob(".dog.zarr.tmp-*"))


# ------------------------------------------------------------------ through the snakemake CLI


def tiny_config(tmp_path: Path, sheet: str, **overrides) -> Path:
    """The tiny test config with its own sample sheet, no benchmark scenes and no refinement runs."""
    with open(ROOT / "tests/data/tiny/config.yaml") as fh:
        config = yaml.safe_load(fh)
    sheet_path = tmp_path / "samples.tsv"
    sheet_path.write_text(sheet)
    config.update({"samples": str(sheet_path), "asset_root": str(SHARED), "benchmarks": {},
                   "refine": {"heldout": False, "transductive": False}})
    for key, value in overrides.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake_cmd(workdir: Path, config: Path, *args: str) -> list[str]:
    return [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2",
            "--configfile", str(config), "--replace-workflow-config", *args]


def run_snakemake(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(snakemake_cmd(workdir, config, *args), capture_output=True, text=True, timeout=600)
    proc.output = proc.stdout + proc.stderr
    return proc


HEADER = "name\tpath\tstart\tend\tstride\tresize\n"


@pytest.mark.parametrize("rows, message", [
    ("a\tdata/videos/tree.avi\t0\t8\t1\t\na\tdata/frames/dog_run\t0\t8\t1\t\n",
     "row 2 (name 'a'), column 'name': duplicate sample name 'a' (also row 1)"),
    ("a\tdata/videos/tree.avi\t10\t5\t1\t\n",
     "row 1 (name 'a'), column 'end': end=5 must be greater than start=10 (end is exclusive)"),
    (None, "unknown column(s) ['fps']; allowed: name, path, start, end, stride, resize"),
], ids=["duplicate-name", "bad-range", "unknown-column"])
def test_bad_sample_sheet_stops_the_cli_before_any_job(tmp_path, rows, message):
    sheet = HEADER + rows if rows else "name\tpath\tfps\na\tdata/videos/tree.avi\t25\n"
    config = tiny_config(tmp_path, sheet)
    proc = run_snakemake(tmp_path / "w", config, "results/frames/a.zarr")
    assert proc.returncode != 0
    assert f"{tmp_path / 'samples.tsv'}" in proc.output and message in proc.output
    assert not (tmp_path / "w" / "results").exists()


def test_corrupt_video_fails_its_frames_job_and_leaves_no_store(tmp_path):
    video = tmp_path / "broken.avi"
    video.write_bytes(np.random.default_rng(1).bytes(20000))
    config = tiny_config(tmp_path, f"name\tpath\nbad\t{video}\n")
    proc = run_snakemake(tmp_path / "w", config, "results/frames/bad.zarr")
    message = f"{video}: cannot open video (corrupt, truncated or unsupported container)"
    assert proc.returncode != 0 and message in proc.output
    assert message in (tmp_path / "w/results/logs/frames/bad.log").read_text()
    assert_nothing_left(tmp_path / "w/results/frames/bad.zarr")


@pytest.mark.slow
def test_unpinned_weights_fail_the_flow_job_and_leave_no_store(tmp_path):
    config = tiny_config(tmp_path, f"{HEADER}tree\t{TREE}\t10\t13\t1\t96x64\n", model={"sha256": "0" * 64})
    proc = run_snakemake(tmp_path / "w", config, "results/flow/raft-small/tree.zarr")
    assert proc.returncode != 0
    assert f"checkpoint {WEIGHTS} has sha256 {PINNED}, but the config pins {'0' * 64}" in proc.output
    assert (tmp_path / "w/results/frames/tree.zarr").is_dir()  # the frames job did not need the weights
    assert_nothing_left(tmp_path / "w/results/flow/raft-small/tree.zarr")



@pytest.mark.slow
def test_snakemake_killed_mid_job_reruns_only_that_job(tmp_path):
    # Full-size frames so the flow job is busy writing long enough to be killed mid-write.
    config = tiny_config(tmp_path, f"{HEADER}big\t{TREE}\t10\t16\t1\t\n")
    work = tmp_path / "w"
    target = "results/flow/raft-small/big.zarr"
    # Its own session: SIGKILL to the group takes the running job with snakemake, like a lost node.
    log = tmp_path / "snakemake.log"
    proc = start(snakemake_cmd(work, config, target), log, start_new_session=True)
    try:
        wait_for(lambda: list((work / "results/flow/raft-small").glob(".big.zarr.tmp-*")), proc, log,
                 "the flow job's first write")
    finally:
        with contextlib.suppress(ProcessLookupError):  # already gone if it failed early
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (work / target).exists()
    marked = [base64.b64decode(p.name).decode() for p in (work / ".snakemake/incomplete").iterdir()]
    assert marked == [target]  # Snakemake's own record of the job that never finished

    dry = run_snakemake(work, config, target, "--dry-run")
    assert dry.returncode == 0, dry.output
    assert dry_run_jobs(dry.output) == {("flow", target)}  # the frames job finished and is not redone
    # The killed run's lock stays: a real run says so and names the fix.
    locked = run_snakemake(work, config, target)
    assert locked.returncode != 0 and "--unlock" in locked.output
    assert run_snakemake(work, config, target, "--unlock").returncode == 0
    again = run_snakemake(work, config, target, "--rerun-incomplete")
    assert again.returncode == 0, again.output
    g = open_group(work / target)
    assert g["flow_fw"].shape == (5, 240, 320, 2) and g.attrs["pairs"] == 5
    assert not list((work / ".snakemake/incomplete").iterdir())
    assert not list((work / "results/flow/raft-small").glob(".big.zarr.tmp-*"))
    assert "Nothing to be done" in run_snakemake(work, config, target, "--dry-run").output
