"""One video's deliverables: what a user takes away from a run on their footage.

``results/deliverables/{video}/`` (or ``results/infer/{video}/`` for a model applied to new
clips) holds

- ``flow/{fmt}/fw_{i:06d}.{ext}`` and ``bw_{i:06d}.{ext}``: the delivered flow of every stored
  pair, forward (frame i -> the next stored frame) and backward, numbered by the SOURCE frame
  index i of the pair's first frame, at the source resolution by default (vectors rescaled);
- ``tracks.csv`` (track, frame, x, y, visible; source frame index and pixels) and
  ``tracks.pkl`` (TAP-Vid layout over the stored frames), when the run tracks points;
- ``preview.mp4``: each frame with its tracks, beside the flow colour;
- ``meta.json``: where every number came from (:mod:`motionrefine.deliver.meta`).

Which model's flow a video gets is decided per video (:func:`choose_flow`): the refined
model's only where the guard's check on that video favours it.

The folder appears only when complete: it is written under a temporary sibling and renamed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Mapping

import numpy as np

from motionrefine.config.settings import DeliverySettings
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import open_group
from motionrefine.deliver.meta import deliverable_meta, tracks_meta
from motionrefine.io.flow_formats import EXPORT_FORMATS as FLOW_FORMATS
from motionrefine.io.flow_formats import export_flow_store
from motionrefine.io.track_formats import read_track_store, write_tapvid_pickle, write_tracks_csv

log = logging.getLogger("motionrefine")
RESOLUTIONS = ("source", "stored")


def choose_flow(verdict: Mapping | None, video: str) -> dict:
    """Which model's flow ``video`` gets, from a guard verdict (guard.json) or a clip check.

    The video's own entry decides where there is one (``use``: refined | pretrained); else the
    pooled decision; a clip check (``infer``) is such an entry itself. No verdict at all (no
    refined model): the pretrained model."""
    if verdict is None:
        return {"use": "pretrained", "flag": "not refined", "reason": "no model other than the pretrained one"}
    entry = verdict if "use" in verdict else (verdict.get("videos") or {}).get(video)
    if isinstance(entry, Mapping) and entry.get("use") in ("refined", "pretrained"):
        return {k: entry[k] for k in ("use", "flag", "reason", "change_pct", "interval_pct") if k in entry}
    keep = bool(verdict.get("keep_refined"))
    return {"use": "refined" if keep else "pretrained", "flag": "pooled",
            "reason": f"one decision for every video of the run: {verdict.get('reason', '')}"}


def write_deliverable(out_dir: str | os.PathLike, video: str, frames_path: str, flows: Mapping[str, str],
                      choice: Mapping, settings: DeliverySettings, tracks_path: str | None = None,
                      extra: Mapping | None = None) -> dict:
    """Write ``out_dir`` for ``video``: the flow store ``flows[choice['use']]`` exported, the
    tracks store (optional) exported, the preview and meta.json. Returns the meta."""
    from motionrefine.io.preview import store_fps, write_preview
    from motionrefine.track.queries import to_source_pixels

    if settings.resolution not in RESOLUTIONS:
        raise MotionRefineError(f"config key 'deliverables.resolution': {settings.resolution!r} is not one of "
                                f"{list(RESOLUTIONS)}")
    use = choice["use"]
    if use not in flows:
        raise MotionRefineError(f"{video}: the verdict asks for the {use} model's flow, which this job was not given")
    frames_group = open_group(frames_path)
    attrs = dict(frames_group.attrs)
    size = (attrs["original_size"]["width"], attrs["original_size"]["height"]) if settings.resolution == "source" \
        else None
    indices = list(attrs["frame_indices"])
    flow_group = open_group(flows[use])

    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        files: dict[str, str] = {}
        for fmt in settings.flow_formats:
            if fmt not in FLOW_FORMATS:
                raise MotionRefineError(f"config key 'export.flow': unknown format {fmt!r}")
            export_flow_store(flows[use], tmp / "flow" / fmt, fmt, size=size, frame_indices=indices[:-1])
            files[f"flow_{fmt}"] = f"flow/{fmt}"
        tracks = visible = None
        if tracks_path is not None:
            tracks, visible = read_track_store(tracks_path)
            src_tracks = to_source_pixels(tracks, attrs) if settings.resolution == "source" else tracks
            if "csv" in settings.track_formats:
                write_tracks_csv(tmp / "tracks.csv", src_tracks, visible, frame_indices=indices)
                files["tracks_csv"] = "tracks.csv"
            if "tapvid" in settings.track_formats:
                # Normalised coordinates: the stored frames and stored-pixel tracks say the same.
                write_tapvid_pickle(tmp / "tracks.pkl", {video: (frames_group["frames"][...], tracks, visible)})
                files["tracks_tapvid"] = "tracks.pkl"
        if settings.preview:
            write_preview(tmp / "preview.mp4", frames_group["frames"], flow_group["flow_fw"], tracks, visible,
                          fps=store_fps(attrs))
            files["preview"] = "preview.mp4"
        meta = deliverable_meta(video, attrs, dict(flow_group.attrs), choice, settings.resolution, files,
                                None if tracks_path is None else tracks_meta(tracks_path), extra or {})
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("%s: deliverables (%s model's flow, %s resolution) -> %s", video, use, settings.resolution, out)
    return meta
