"""Flow export to the formats other tools read, and flow from a refined checkpoint."""

from pathlib import Path

import numpy as np
import pytest

from motionrefine.core.errors import MotionRefineError
from motionrefine.io.flow_formats import export_flow_store, read_flo, read_npy_flow
from motionrefine.core.store import atomic_group, write_array


def _store(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    fw = rng.normal(size=(3, 5, 7, 2)).astype(np.float32)
    bw = -fw
    with atomic_group(path) as g:
        write_array(g, "flow_fw", fw)
        write_array(g, "flow_bw", bw)
    return fw, bw


@pytest.mark.parametrize("fmt,reader", [("flo", read_flo), ("npy", read_npy_flow)])
def test_export_round_trips_every_pair_and_direction(tmp_path, fmt, reader):
    fw, bw = _store(tmp_path / "flow.zarr")
    out = tmp_path / f"video.{fmt}"
    assert export_flow_store(tmp_path / "flow.zarr", out, fmt) == 6
    assert sorted(p.name for p in out.iterdir()) == [f"{d}_{t:06d}.{fmt}" for d in ("bw", "fw") for t in range(3)]
    for t in range(3):
        np.testing.assert_array_equal(reader(out / f"fw_{t:06d}.{fmt}"), fw[t])
        np.testing.assert_array_equal(reader(out / f"bw_{t:06d}.{fmt}"), bw[t])


def test_export_rejects_unknown_format_and_leaves_nothing(tmp_path):
    _store(tmp_path / "flow.zarr")
    with pytest.raises(MotionRefineError, match="unknown export format"):
        export_flow_store(tmp_path / "flow.zarr", tmp_path / "video.png", "png")
    assert not (tmp_path / "video.png").exists()
