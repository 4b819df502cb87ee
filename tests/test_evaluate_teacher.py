"""The teacher as a baseline: the real RAFT-small checkpoint at the student's and the teacher's
settings on a tiny constructed scene (a texture shifted by one pixel a frame), timed."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import require_asset
from motionrefine.bench.metrics import flow_scene_metrics
from motionrefine.flow.evaluate import TEACHER_COLUMNS, evaluate_flow, teacher_vs_student
from motionrefine.flow.inference import FlowEstimator
from motionrefine.flow.teacher import Teacher, TeacherSettings
from motionrefine.io.readers import FlowScene
from motionrefine.models.checkpoint import load_raft

WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "raft-small.pth"
H, W, T = 64, 72, 3
# Small teacher and student so the test stays quick on a shared CPU.
TEACHER = TeacherSettings(scales=(2.0,), iters=3, flip=True)
STUDENT = {"variant": "small", "iters": 2, "device": "cpu", "threads": 1}


@pytest.fixture(scope="module")
def scene():
    require_asset(WEIGHTS)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (H + T, W + T, 3), dtype=np.uint8)
    # Frame t shows base from (t, t): content moves by (-1, -1) px a frame.
    frames = np.stack([base[t:t + H, t:t + W] for t in range(T)])
    flow = np.full((T - 1, H, W, 2), -1.0, np.float32)
    return FlowScene("shift", np.ascontiguousarray(frames), flow, np.ones((T - 1, H, W), bool),
                     meta={"benchmark": "tiny"})


@pytest.fixture(scope="module")
def rows(scene):
    torch.manual_seed(0)
    return teacher_vs_student(str(WEIGHTS), [scene], TEACHER, **STUDENT, benchmark="tiny")


def test_teacher_and_student_rows_are_timed(rows):
    assert list(rows.columns[:len(TEACHER_COLUMNS)]) == list(TEACHER_COLUMNS)
    assert rows["model"].tolist() == ["student", "teacher"]
    assert set(rows["scene"]) == {"shift"} and set(rows["benchmark"]) == {"tiny"}
    assert (rows["seconds_per_pair"] > 0).all() and np.isfinite(rows["epe"]).all()
    assert rows.set_index("model")["iters"].to_dict() == {"student": 2, "teacher": 3}


def test_teacher_row_is_the_teacher_flow(rows, scene):
    model, _ = load_raft(str(WEIGHTS), "small")
    est = Teacher(FlowEstimator(model, iters=TEACHER.iters, device=torch.device("cpu")), TEACHER)
    fw, _ = est.pairs(scene.frames, backward=False)
    want = flow_scene_metrics(scene, fw)["epe"]
    assert rows.set_index("model").loc["teacher", "epe"] == pytest.approx(want, rel=1e-5)


def test_untimed_student_evaluation_is_unchanged(rows, scene):
    """The evaluate rule's call (no teacher, not timed): same EPE as the timed student, no new column."""
    df = evaluate_flow({"pretrained": str(WEIGHTS)}, [scene], **STUDENT, benchmark="tiny")
    assert "seconds_per_pair" not in df.columns and df["iters"].tolist() == [2]
    assert df["epe"].iloc[0] == pytest.approx(rows.set_index("model").loc["student", "epe"], rel=1e-6)


def test_teacher_row_from_its_label_making_store(tmp_path, scene):
    """The teacher's row read from a teacher flow store: the same EPE as running it, the store's
    seconds halved per direction, and a store that does not fit the scene is refused."""
    from motionrefine.core.errors import MotionRefineError
    from motionrefine.core.store import atomic_group, write_array
    model, _ = load_raft(str(WEIGHTS), "small")
    est = Teacher(FlowEstimator(model, iters=TEACHER.iters, device=torch.device("cpu")), TEACHER)
    fw, bw = est.pairs(scene.frames)
    store = tmp_path / "teacher.zarr"
    with atomic_group(store) as g:
        write_array(g, "flow_fw", fw)
        write_array(g, "flow_bw", bw)
        g.attrs.update({"pairs": T - 1, "seconds": 3.0, "iters": TEACHER.iters})
    df = teacher_vs_student(str(WEIGHTS), [scene], TEACHER, teacher_stores=[str(store)], **STUDENT, benchmark="tiny")
    t = df.set_index("model")
    assert t.loc["teacher", "epe"] == pytest.approx(flow_scene_metrics(scene, fw)["epe"], rel=1e-6)
    assert t.loc["teacher", "seconds_per_pair"] == pytest.approx(3.0 / (2 * (T - 1)))
    assert t.loc["student", "seconds_per_pair"] > 0
    bad = tmp_path / "bad.zarr"
    with atomic_group(bad) as g:
        write_array(g, "flow_fw", fw[:1])
    with pytest.raises(MotionRefineError, match="does not match scene"):
        teacher_vs_student(str(WEIGHTS), [scene], TEACHER, teacher_stores=[str(bad)], **STUDENT)


def test_identical_checkpoints_are_evaluated_once(tmp_path, scene, monkeypatch):
    """A copy of a checkpoint (the guard's choice) gets the same rows under its own label,
    without running the model again."""
    import shutil

    import motionrefine.flow.evaluate as evaluate
    copy = tmp_path / "refined.pth"
    shutil.copyfile(WEIGHTS, copy)
    calls = []
    real = evaluate.predict_scene
    monkeypatch.setattr(evaluate, "predict_scene", lambda est, sc: calls.append(sc.name) or real(est, sc))
    df = evaluate_flow({"pretrained": str(WEIGHTS), "refined": str(copy)}, [scene], **STUDENT, benchmark="tiny")
    assert calls == ["shift"]
    t = df.set_index("model")
    assert t.loc["refined", "epe"] == t.loc["pretrained", "epe"]
    assert t.loc["refined", "checkpoint_sha256"] == t.loc["pretrained", "checkpoint_sha256"]
