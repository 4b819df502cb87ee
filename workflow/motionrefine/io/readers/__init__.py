"""Benchmark readers: one in-memory interface for every evaluation data set.

The evaluate stage only ever sees two types:

- :class:`FlowScene`: frames (T, H, W, 3) uint8 RGB, ground-truth forward flow for each
  pair (t, t+1) as (T−1, H, W, 2) float32 (u, v) in pixels, a validity mask and an
  optional occlusion mask. Pixel centres are at integer coordinates (see ``geometry``);
  all these benchmarks already use that convention for flow, which is a displacement.
- :class:`TrackScene`: frames, tracks (N, T, 2) float32 xy pixels, occlusion (N, T)
  and the query frame of each track.

Readers yield scenes lazily (a Sintel scene is ~250 MB in memory) and raise
:class:`MotionRefineError` naming the file or folder at fault.

The TAP-Vid pixel convention is described in :mod:`motionrefine.io.readers.tapvid`.
"""

from motionrefine.io.readers.benchmark import BENCHMARKS, iter_benchmark
from motionrefine.io.readers.images import read_rgb
from motionrefine.io.readers.kitti import read_kitti2015
from motionrefine.io.readers.middlebury import (
    read_middlebury_flow,
    read_middlebury_stereo,
    read_middlebury_stereo_pair,
    stereo_flow_scene,
)
from motionrefine.io.readers.scenes import FlowScene, TrackScene
from motionrefine.io.readers.sintel import read_sintel
from motionrefine.io.readers.tapvid import (
    TAPVID_QUERY_STRIDE,
    TAPVID_RESOLUTION,
    read_tapvid,
    resize_frames,
    sample_queries_first,
    sample_queries_strided,
    tapvid_scene,
)

__all__ = [
    "BENCHMARKS",
    "FlowScene",
    "TAPVID_QUERY_STRIDE",
    "TAPVID_RESOLUTION",
    "TrackScene",
    "iter_benchmark",
    "read_kitti2015",
    "read_middlebury_flow",
    "read_middlebury_stereo",
    "read_middlebury_stereo_pair",
    "read_rgb",
    "read_sintel",
    "read_tapvid",
    "resize_frames",
    "sample_queries_first",
    "sample_queries_strided",
    "stereo_flow_scene",
    "tapvid_scene",
]
