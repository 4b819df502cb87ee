"""Registry of the benchmark readers, by name."""

from __future__ import annotations

from typing import Callable, Iterator

from motionrefine.core.errors import MotionRefineError
from motionrefine.io.readers.kitti import read_kitti2015
from motionrefine.io.readers.middlebury import read_middlebury_flow, read_middlebury_stereo
from motionrefine.io.readers.scenes import FlowScene, TrackScene
from motionrefine.io.readers.sintel import read_sintel
from motionrefine.io.readers.tapvid import read_tapvid


BENCHMARKS: dict[str, Callable[..., Iterator]] = {
    "sintel": read_sintel,
    "kitti2015": read_kitti2015,
    "middlebury_stereo": read_middlebury_stereo,
    "middlebury_flow": read_middlebury_flow,
    "tapvid_davis": read_tapvid,
    "tapvid_kinetics": read_tapvid,
}


def iter_benchmark(name: str, root, **options) -> Iterator[FlowScene | TrackScene]:
    """Scenes of benchmark ``name`` (a key of :data:`BENCHMARKS`) read from ``root``."""
    try:
        reader = BENCHMARKS[name]
    except KeyError:
        raise MotionRefineError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}") from None
    return reader(root, **options)
