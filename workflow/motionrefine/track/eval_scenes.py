"""Scenes the trackers are scored on: a benchmark's ``TrackScene`` as it is, or the synthetic
renderer's sequences with exact tracks (real textures cut from frames, or procedural ones)."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from motionrefine.core.errors import MotionRefineError
from motionrefine.io.readers import TrackScene


def as_track_scene(scene, name: str | None = None, query_mode: str | None = None) -> TrackScene:
    """A :class:`TrackScene` from a TrackScene or a ``synth.SynthSequence``.

    Synthetic scenes have exact positions before the query frame too, so they are scored
    in "strided" mode (every frame but the query frame) unless ``query_mode`` says otherwise.
    """
    if isinstance(scene, TrackScene):
        if query_mode and query_mode != scene.query_mode:
            return TrackScene(name or scene.name, scene.frames, scene.tracks, scene.occluded, scene.query_frame,
                              query_mode, scene.meta)
        return scene if name is None else TrackScene(name, scene.frames, scene.tracks, scene.occluded,
                                                     scene.query_frame, scene.query_mode, scene.meta)
    if all(hasattr(scene, k) for k in ("frames", "tracks", "occluded", "query_frame")):
        cfg = getattr(scene, "config", None)
        default = f"synth-{getattr(cfg, 'seed', 0)}"
        return TrackScene(name or default, np.asarray(scene.frames), np.asarray(scene.tracks, np.float32),
                          np.asarray(scene.occluded, bool), np.asarray(scene.query_frame).astype(np.int64),
                          query_mode or "strided")
    raise MotionRefineError(f"cannot evaluate on {type(scene).__name__}: expected a TrackScene or SynthSequence")


def heldout_real_scenes(frames_dir: str | os.PathLike, n: int = 4, frames: int = 24, height: int = 128,
                        width: int = 160, seed: int = 100, preset_mix: str | Sequence[str] = "easy,nonrigid_mild",
                        n_tracks: int = 128, camera_motion: float = 3.0, layer_speed: float = 4.0,
                        query_every: int = 8) -> list[TrackScene]:
    """``n`` real-texture scenes (synth renderer, textures from the real frames in ``frames_dir``),
    exact tracks; presets cycle through ``preset_mix``. Non-rigid amplitude/sigma are scaled to
    the frame size (the presets are meant for 256×448). Queries at frames 0, query_every, …

    ``frames_dir="procedural"`` renders the same scenes with procedural textures instead
    (``synthetic.procedural_texture``, a seed range the pre-training never draws), which
    isolates the synthetic-to-real texture gap."""
    if str(frames_dir) == "procedural":
        from motionrefine.track.synthetic import procedural_texture

        rng = np.random.default_rng([seed, 777])
        sources = [procedural_texture(rng, int(1.5 * height), int(1.5 * width)) for _ in range(6)]
        label = "procedural"
    else:
        files = sorted(glob.glob(str(Path(frames_dir) / "*.jpg")) + glob.glob(str(Path(frames_dir) / "*.png")))
        if not files:
            raise MotionRefineError(f"no .jpg/.png frames in {frames_dir}")
        picks = np.linspace(0, len(files) - 1, min(len(files), 6)).round().astype(int)
        sources = []
        for i in picks:
            bgr = cv2.imread(files[i], cv2.IMREAD_COLOR)
            if bgr is None:
                raise MotionRefineError(f"cannot read {files[i]}")
            scale = 1.5 * max(height / bgr.shape[0], width / bgr.shape[1])
            if scale < 1:  # the renderer rescales anyway; doing it once here keeps it fast
                bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            sources.append(np.ascontiguousarray(bgr[..., ::-1]))
        label = Path(frames_dir).name
    return render_scenes(sources, label, n, frames, height, width, seed, preset_mix, n_tracks, camera_motion,
                         layer_speed, query_every)


def render_scenes(sources: Sequence[np.ndarray], label: str, n: int, frames: int, height: int, width: int,
                  seed: int, preset_mix: str | Sequence[str], n_tracks: int, camera_motion: float,
                  layer_speed: float, query_every: int) -> list[TrackScene]:
    from motionrefine.bench import synth

    presets = [p.strip() for p in preset_mix.split(",")] if isinstance(preset_mix, str) else list(preset_mix)
    ratio = float(np.hypot(height, width) / np.hypot(256, 448))
    out = []
    for i in range(n):
        preset = presets[i % len(presets)]
        kw = dict(height=height, width=width, frames=frames, n_tracks=n_tracks, camera_motion=camera_motion,
                  layer_speed=layer_speed, query_frames=tuple(range(0, frames, query_every)), seed=seed + i)
        base = synth.PRESETS[preset]
        if base.get("nonrigid_amplitude", 0) > 0:
            kw.update(nonrigid_amplitude=base["nonrigid_amplitude"] * ratio, nonrigid_sigma=base["nonrigid_sigma"] * ratio)
        seq = synth.render_sequence(sources, synth.make_config(preset, **kw))
        out.append(as_track_scene(seq, name=f"{label}-{preset}-{seed + i}"))
    return out
