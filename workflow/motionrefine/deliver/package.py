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
model's only where the guard's check on that video favours it. :func:`delivered_flow` runs
only that model and records the choice in its store.

The folder appears only when complete: it is written under a temporary sibling and renamed.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Mapping

from motionrefine.config.settings import DeliverySettings
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.store import atomic_dir, open_group
from motionrefine.deliver.meta import deliverable_meta, tracks_meta
from motionrefine.io.flow_formats import EXPORT_FORMATS as FLOW_FORMATS
from motionrefine.io.flow_formats import export_flow_store
from motionrefine.io.track_formats import read_track_store, write_tapvid_pickle, write_tracks_csv

log = logging.getLogger("motionrefine")
RESOLUTIONS = ("source", "stored")


def _json_safe(value):
    """NaN (an interval the guard could not give) as null: meta.json stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def choose_flow(verdict: Mapping | None, video: str) -> dict:
    """Which model's flow ``video`` gets, with the label-free signals behind the choice: its
    entry of a guard verdict (guard.json, :func:`flow.guard.video_choice`), or a clip check of
    ``snakemake infer`` (an entry itself). No verdict (no refined model): the pretrained model."""
    from motionrefine.flow.guard import video_choice

    if verdict is None:
        return {"use": "pretrained", "flag": "not refined", "reason": "no model other than the pretrained one"}
    entry = verdict if "use" in verdict and "videos" not in verdict else video_choice(dict(verdict), video)
    keys = ("use", "flag", "reason", "change_pct", "interval_pct", "blocks", "pretrained", "refined")
    return _json_safe({k: entry[k] for k in keys if k in entry})


def delivered_flow(frames_path: str, out_path: str, video: str, verdict: Mapping | None, pretrained: str,
                   refined: str | None, settings, threads: int = 1, expected_sha256: str | None = None,
                   progress: bool = False) -> dict:
    """The flow store a video's deliverables export: ``refined`` weights where the verdict hands
    them to ``video`` (:func:`choose_flow`), else ``pretrained`` (checked against
    ``expected_sha256``); only the chosen model runs. The choice is stored in the attrs
    (``delivery``), so the deliverable and its meta.json cannot disagree with the flow."""
    from motionrefine.flow.inference import flow_stage

    choice = choose_flow(verdict, video)
    if choice["use"] == "refined" and refined is None:
        raise MotionRefineError(f"{video}: the verdict hands it refined weights, but none were given")
    checkpoint, sha = (refined, None) if choice["use"] == "refined" else (pretrained, expected_sha256)
    flow_stage(frames_path=frames_path, out_path=out_path, checkpoint=checkpoint, **settings.stage_kwargs(),
               threads=threads, expected_sha256=sha, progress=progress, extra_attrs={"delivery": choice})
    log.info("%s: %s weights (%s)", video, choice["use"], choice["reason"])
    return choice


def write_deliverable(out_dir: str | os.PathLike, video: str, frames_path: str, flow_path: str,
                      settings: DeliverySettings, tracks_path: str | None = None,
                      extra: Mapping | None = None) -> dict:
    """Write ``out_dir`` for ``video``: its delivered flow store (:func:`delivered_flow`)
    exported, the tracks store (optional) exported, the preview and meta.json. Returns the meta."""
    from motionrefine.io.preview import store_fps, write_preview
    from motionrefine.track.queries import to_source_pixels

    if settings.resolution not in RESOLUTIONS:
        raise MotionRefineError(f"config key 'deliverables.resolution': {settings.resolution!r} is not one of "
                                f"{list(RESOLUTIONS)}")
    flow_group = open_group(flow_path)
    choice = flow_group.attrs.get("delivery")
    if not isinstance(choice, Mapping):
        raise MotionRefineError(f"{flow_path}: not a delivered flow store (no 'delivery' attrs); rule delivered_flow "
                                "writes one")
    frames_group = open_group(frames_path)
    attrs = dict(frames_group.attrs)
    size = (attrs["original_size"]["width"], attrs["original_size"]["height"]) if settings.resolution == "source" \
        else None
    indices = list(attrs["frame_indices"])

    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        files: dict[str, str] = {}
        for fmt in settings.flow_formats:
            if fmt not in FLOW_FORMATS:
                raise MotionRefineError(f"config key 'export.flow': unknown format {fmt!r}")
            export_flow_store(flow_path, tmp / "flow" / fmt, fmt, size=size, frame_indices=indices[:-1])
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
    log.info("%s: deliverables (%s model's flow, %s resolution) -> %s", video, choice["use"], settings.resolution,
             out)
    return meta
