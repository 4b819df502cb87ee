"""Scenes as Zarr v3 groups: atomic write, read back without the layer models."""

from __future__ import annotations

import json
import os

import numpy as np

from motionrefine.bench.synth.config import SynthConfig
from motionrefine.bench.synth.render import SYNTH_FORMAT_VERSION, SynthSequence
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import atomic_group, open_group, write_array

_ARRAYS = ("frames", "flow_fw", "flow_bw", "occ_fw", "occ_bw", "tracks", "occluded", "query_frame",
           "query_xy", "owner", "mixed", "track_layer", "layer_transforms")


def write_sequence(seq: SynthSequence, path: str | os.PathLike, attrs: dict | None = None) -> None:
    """Write ``seq`` as a Zarr v3 group, atomically; ``attrs`` (e.g. source description) are merged in.

    Arrays: frames, flow_fw, flow_bw, occ_fw, occ_bw, tracks, occluded, query_frame,
    query_xy, plus owner, mixed, track_layer, layer_transforms, and frames_clean when
    photometric changes were applied. Attrs: config, seed, info, format_version and
    the caller's ``attrs``.
    """
    with atomic_group(path) as g:
        for name in _ARRAYS:
            data = np.ascontiguousarray(getattr(seq, name))
            chunks = None if data.ndim >= 3 else data.shape
            write_array(g, name, data, chunks=chunks)
        if seq.frames_clean is not None and seq.frames_clean is not seq.frames:
            write_array(g, "frames_clean", np.ascontiguousarray(seq.frames_clean))
        meta = {"config": seq.config.to_dict(), "seed": int(seq.config.seed), "info": seq.info,
                "format_version": SYNTH_FORMAT_VERSION}
        meta.update(json.loads(json.dumps(attrs or {})))
        g.attrs.update(meta)


def read_sequence(path: str | os.PathLike) -> SynthSequence:
    """Read a store written by ``write_sequence`` (layer models are not stored: ``layers`` is None)."""
    g = open_group(path)
    missing = [k for k in _ARRAYS if k not in g]
    if missing or "config" not in g.attrs:
        raise MotionRefineError(f"{path} is not a synth sequence store (missing {missing or ['config attr']})")
    arrays = {k: g[k][...] for k in _ARRAYS}
    clean = g["frames_clean"][...] if "frames_clean" in g else arrays["frames"]
    return SynthSequence(config=SynthConfig.from_dict(dict(g.attrs["config"])), info=dict(g.attrs.get("info", {})),
                         frames_clean=clean, layers=None, **arrays)
