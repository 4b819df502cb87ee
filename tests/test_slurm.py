"""SLURM execution: the profile's plan (no cluster needed) and a tiny run on a real SLURM.

The cluster test runs against the single-node cluster of ../shared/tools/slurm-local.sh
(.ci/run starts it with SLURM_LOCAL_FAKE_GPUS=1; the test starts it itself when it is not
running, and then stops it again). It is skipped only when sbatch is not on PATH and
MOTIONREFINE_REQUIRE_SLURM is unset; CI sets MOTIONREFINE_REQUIRE_SLURM=1.

It runs the per-video chain (frames, flow, labels) of the tiny config: about 1 min. Set
MOTIONREFINE_SLURM_FULL=1 to run the tiny config's whole default target instead (fine-tune,
evaluation, report: about 4-6 min here, each of the ~9 steps waits for SLURM).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SLURM_LOCAL = ROOT.parent / "shared/tools/slurm-local.sh"
PROFILE = ROOT / "profiles/slurm/config.yaml"
TINY = ROOT / "tests/data/tiny/config.yaml"
VIDEOS = ("tree", "dog")
# Rules that run a model and so ask for a GPU; every other rule must not.
MODEL_HEAVY = {"flow", "labels", "finetune", "guard", "evaluate", "evaluate_teacher", "track_labels",
               "track_finetune", "track_eval", "track_predict", "delivered_flow", "inferred_flow", "infer_labels",
               "infer_check", "infer_tracks"}
FULL = bool(os.environ.get("MOTIONREFINE_SLURM_FULL"))
RUN_LIMIT_S = 900 if FULL else 420  # a hang must end as a failed test, not block CI


def plan_resources(out: str) -> dict[str, list[dict[str, str]]]:
    """rule -> the `resources:` of each of its jobs, from snakemake's dry-run output."""
    plan: dict[str, list[dict[str, str]]] = {}
    rule = None
    for line in out.splitlines():
        m = re.match(r"\s*(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
            continue
        m = re.match(r"\s*resources: (.*)", line)
        if m and rule:
            pairs = (kv.split("=", 1) for kv in m.group(1).split(", "))
            plan.setdefault(rule, []).append({k: v for k, v in pairs})
            rule = None
    return plan


def test_profile_dry_run_requests_gpus_on_model_rules_only(tmp_path):
    proc = subprocess.run(
        [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--profile", str(PROFILE.parent), "--dry-run",
         "--directory", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    plan = plan_resources(out)
    assert {"frames", "delivered_flow", "labels"} <= set(plan), out
    gpu_rules = {r for r, jobs in plan.items() if any(int(j.get("gpu", 0)) > 0 for j in jobs)}
    assert gpu_rules == MODEL_HEAVY & set(plan), out
    # Every job of a GPU rule asks for one (none lost to a rule-level default).
    for r in gpu_rules:
        assert all(j.get("gpu") == "1" for j in plan[r]), plan[r]
    # The site's placeholders reach every job; GPU rules get the GPU partition.
    for r, jobs in plan.items():
        for j in jobs:
            want = "CHANGE_ME_gpu_partition" if r in MODEL_HEAVY else "CHANGE_ME_partition"
            assert j.get("slurm_partition") == want, (r, j)
    # Small per-video CPU steps are batched into group jobs.
    assert "Group job frames_batch" in out and "Group job labels_batch" not in out, out


# --- the real cluster -------------------------------------------------------------------


def _run(cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _cluster_up() -> bool:
    if not shutil.which("scontrol") or not shutil.which("sinfo"):
        return False
    try:
        ping = _run(["scontrol", "ping"], timeout=20)
        state = _run(["sinfo", "-h", "-o", "%T"], timeout=20).stdout.split()
    except subprocess.TimeoutExpired:
        return False
    return "UP" in ping.stdout and any(s.rstrip("*~#") in ("idle", "mixed", "allocated", "completing") for s in state)


@pytest.fixture(scope="module")
def slurm():
    """The local cluster: its partition and the status command the executor must use."""
    if shutil.which("sbatch") is None and not os.environ.get("MOTIONREFINE_REQUIRE_SLURM"):
        pytest.skip("sbatch not on PATH and MOTIONREFINE_REQUIRE_SLURM unset (set it to have the "
                    "test install and start the local cluster, ../shared/tools/slurm-local.sh)")
    started = False
    if not _cluster_up():
        env = {**os.environ, "SLURM_LOCAL_FAKE_GPUS": "1"}
        proc = _run(["bash", str(SLURM_LOCAL), "start"], timeout=900, env=env)
        if proc.returncode != 0:
            pytest.fail(f"could not start the local SLURM cluster:\n{proc.stdout}\n{proc.stderr}")
        started = True
    try:
        gres = _run(["sinfo", "-h", "-o", "%G"]).stdout
        if "gpu" not in gres:
            pytest.fail(f"the SLURM node has no GPU GRES ({gres.strip()!r}): restart the cluster "
                        "with SLURM_LOCAL_FAKE_GPUS=1 so that GPU jobs are accepted")
        partition = next(p.rstrip("*") for p in _run(["sinfo", "-h", "-o", "%P"]).stdout.split()
                         if p.endswith("*"))
        # Without accounting sacct never reports the jobs, and the executor would wait forever.
        acct = _run(["sacct", "-n", "-X", "-S", "now-1hours"], timeout=30)
        working = acct.returncode == 0 and "disabled" not in acct.stdout + acct.stderr
        cpus = int(_run(["sinfo", "-h", "-o", "%c"]).stdout.split()[0])
        yield {"partition": partition, "cpus": cpus, "status_command": "sacct" if working else "squeue"}
    finally:
        if started:
            _run(["bash", str(SLURM_LOCAL), "stop"], timeout=120)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The workflow with the tiny config as its own config.yaml.

    Snakemake does not pass --replace-workflow-config on to the jobs it submits, so a job
    would merge config.yaml under --configfile and see another config than the main
    process. A project folder whose config.yaml is the test config avoids that.
    """
    proj = tmp_path_factory.mktemp("project")
    for name in ("Snakefile", "workflow", "envs", "profiles"):
        (proj / name).symlink_to(ROOT / name)
    config = yaml.safe_load(TINY.read_text())
    # Relative config paths resolve against the project folder (the Snakefile's), so point them
    # at this checkout and the shared/ beside it.
    config["samples"] = str(ROOT / config["samples"])
    config["asset_root"] = str((ROOT / config["asset_root"]).resolve())
    # GPU declarations as in the real config.yaml; the rest stays tiny.
    for rule, entry in yaml.safe_load((ROOT / "config.yaml").read_text())["resources"].items():
        if rule != "default" and entry.get("gpu", 0) > 0:
            config["resources"][rule] = {"gpu": entry["gpu"]}
    (proj / "config.yaml").write_text(yaml.safe_dump(config))
    return proj


def slurm_profile(dest: Path, slurm: dict) -> Path:
    """profiles/slurm with the site values filled in for the local cluster."""
    prof = yaml.safe_load(PROFILE.read_text())
    prof["cores"] = slurm["cpus"]  # a wider job (e.g. a batch of 3 on 2 cores) would pend forever
    prof["default-resources"]["slurm_partition"] = slurm["partition"]
    del prof["default-resources"]["slurm_account"]
    for entry in prof.get("set-resources", {}).values():
        if "slurm_partition" in entry:
            entry["slurm_partition"] = slurm["partition"]
    prof.update({
        "slurm-no-account": True,
        "slurm-status-command": slurm["status_command"],
        "slurm-init-seconds-before-status-checks": 2,  # default 40 s per step: too slow for CI
        "slurm-keep-successful-logs": True,
    })
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(prof))
    return dest


def targets() -> list[str]:
    if FULL:
        return []  # the default target
    return [t for v in VIDEOS for t in (
        f"results/frames/{v}.zarr", f"results/flow/raft-small/{v}.zarr", f"results/labels/flow/{v}.zarr")]


def run_on_slurm(project: Path, workdir: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = ["timeout", "-k", "15", str(RUN_LIMIT_S), SNAKEMAKE, "-s", str(project / "Snakefile"),
           "--profile", str(profile), "--directory", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_LIMIT_S + 60)


def submitted_jobs(out: str) -> dict[str, Path]:
    """SLURM job id -> the executor's log of it, from 'Job N has been submitted ...' lines."""
    return {m.group(1): Path(m.group(2)) for m in re.finditer(
        r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", out)}


def job_kind(log: Path) -> str:
    """rule_<rule> or group_<group>_...: the executor files each job's log under that folder."""
    return next(p for p in log.parts if p.startswith(("rule_", "group_")))


def is_model_job(kind: str) -> bool:
    # Batches (group_*) hold only small CPU rules; a model rule is always its own job.
    return kind.startswith("rule_") and kind[len("rule_"):] in MODEL_HEAVY


def scontrol_job(jobid: str) -> str:
    return _run(["scontrol", "show", "job", "-o", jobid]).stdout


def arrays(store: Path) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(store), mode="r")
    return {name: a[:] for name, a in g.arrays()}


@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_run_on_slurm_matches_local_run(slurm, project, tmp_path):
    # Reference: the same project run locally (the per-video chain, which is what is compared).
    local = tmp_path / "local"
    chain = [t for v in VIDEOS for t in (
        f"results/frames/{v}.zarr", f"results/flow/raft-small/{v}.zarr", f"results/labels/flow/{v}.zarr")]
    # Not run alongside the SLURM run: on 2 cores the two only slow each other down.
    proc = subprocess.run([SNAKEMAKE, "-s", str(project / "Snakefile"), "--directory", str(local),
                           "--cores", "2", *chain], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    profile = slurm_profile(tmp_path / "profile", slurm)
    remote = tmp_path / "slurm"
    t0 = time.monotonic()
    proc = run_on_slurm(project, remote, profile, *targets())
    elapsed = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"SLURM run failed ({proc.returncode}) after {elapsed:.0f} s:\n{out}"
    print(f"tiny SLURM run: {elapsed:.0f} s")

    # Same results as the local run.
    for v in VIDEOS:
        a, b = arrays(local / f"results/frames/{v}.zarr"), arrays(remote / f"results/frames/{v}.zarr")
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        a, b = arrays(local / f"results/flow/raft-small/{v}.zarr"), arrays(remote / f"results/flow/raft-small/{v}.zarr")
        assert a.keys() == b.keys() and {"flow_fw", "flow_bw"} <= a.keys()
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-4)
        a, b = arrays(local / f"results/labels/flow/{v}.zarr"), arrays(remote / f"results/labels/flow/{v}.zarr")
        assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
        # The GPU job saw the fake GPU's CUDA_VISIBLE_DEVICES, found no CUDA, and said so.
        assert "running on the CPU" in (remote / f"results/logs/flow/raft-small/{v}.log").read_text()

    jobs = submitted_jobs(out)
    kinds = sorted(job_kind(log) for log in jobs.values())
    if FULL:
        assert {"rule_flow", "rule_finetune", "rule_evaluate"} <= set(kinds), kinds  # tiny has no tracking
    else:
        # One job per flow and per label store (the teacher runs inside it); the frames of both
        # videos in one batch.
        expected = ["group_frames_batch", "rule_flow", "rule_flow", "rule_labels", "rule_labels"]
        assert len(kinds) == len(expected) and all(map(str.startswith, kinds, expected)), (kinds, out)
    # Exactly the model jobs were submitted with a GPU request (read back from slurmctld).
    for jobid, log in jobs.items():
        info = scontrol_job(jobid)
        assert "JobState=COMPLETED" in info, info
        has_gpu = re.search(r"gres[:/]gpu[:=]1\b", info) is not None
        assert has_gpu == is_model_job(job_kind(log)), (job_kind(log), info)
        # Jobs run this checkout's venv: the job script calls the submitting python.
        script = _run(["scontrol", "write", "batch_script", jobid, "-"]).stdout
        assert re.search(re.escape(str(Path(SNAKEMAKE).parent)) + r"/python[0-9.]* -m snakemake ", script), script
        assert log.is_file()

    again = run_on_slurm(project, remote, profile, *targets())
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slurm
def test_failing_slurm_job_fails_the_run_and_names_its_logs(slurm, project, tmp_path):
    bad = tmp_path / "bad.avi"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(f"name\tpath\nbad\t{bad}\n")
    workdir = tmp_path / "work"
    proc = run_on_slurm(project, workdir, slurm_profile(tmp_path / "profile", slurm),
                        "results/frames/bad.zarr", "--retries", "0", "--config", f"samples={sheet}")
    out = proc.stdout + proc.stderr
    assert proc.returncode not in (0, 124, 137), f"expected a failed run, not {proc.returncode}:\n{out}"
    assert "Error in group frames_batch" in out or "Error in rule frames" in out, out
    # The message names the rule's log and the executor's log of the SLURM job ...
    assert "results/logs/frames/bad.log" in out, out
    (slurm_log,) = submitted_jobs(out).values()
    assert str(slurm_log) in out.split("Error in", 1)[1], out
    # ... and both hold the reason (the job's error line naming the file).
    error = re.compile(r"ERROR .*bad\.avi")
    rule_log = (workdir / "results/logs/frames/bad.log").read_text()
    assert error.search(rule_log), rule_log
    assert error.search(slurm_log.read_text()), slurm_log.read_text()
    assert not (workdir / "results/frames/bad.zarr").exists()
