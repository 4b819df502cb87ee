"""Evaluate point trackers side by side on scenes with ground-truth tracks.

A tracker is any callable ``(frames (T, H, W, 3) uint8, queries (N, 3) [t, x, y]) ->
(tracks (N, T, 2) float pixels, occluded (N, T) bool)``. Factories here wrap PIPs
(chained windows, ``track_long``), chained RAFT flow (``chain_flow_tracks``) and the
zero-motion baseline.

Scores per (tracker, scene): TAP-Vid δ_avg, AJ and OA on coordinates scaled to 256×256
(as ``metrics.tapvid_metrics`` expects), and PIPs-style survival and MTE on the same scaled
coordinates (so the 16 px survival threshold is the same fraction of the frame at every
resolution) over gt-visible frames; ``mte_px`` is the MTE in the scene's own pixels.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
import torch

from motionrefine.core.errors import MotionRefineError
from motionrefine.bench.metrics import pips_metrics, tapvid_metrics
from motionrefine.io.readers import TrackScene

log = logging.getLogger("motionrefine")

Tracker = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
METRIC_COLUMNS = ("delta_avg", "aj", "oa", "survival", "mte", "mte_px")


# --------------------------------------------------------------------------- scenes

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
    (``pretrain.procedural_texture``, a seed range the pre-training never draws), which
    isolates the synthetic-to-real texture gap."""
    if str(frames_dir) == "procedural":
        from motionrefine.track.pretrain import procedural_texture

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


# --------------------------------------------------------------------------- trackers

def zero_motion_tracker() -> Tracker:
    """Every point stays where it was queried, always visible."""

    def track(frames: np.ndarray, queries: np.ndarray):
        q = np.asarray(queries, np.float32)
        tracks = np.repeat(q[:, None, 1:], len(frames), axis=1)
        return tracks, np.zeros(tracks.shape[:2], bool)

    return track


def pips_tracker(model, iters: int = 6, vis_threshold: float = 0.5, device=None) -> Tracker:
    """PIPs chained over S-frame windows (``track_long``); occluded = visibility < threshold."""
    from motionrefine.models.pips import track_long

    def track(frames: np.ndarray, queries: np.ndarray):
        tracks, vis = track_long(model, frames, queries, S=model.cfg.S, iters=iters, device=device)
        occ = vis < vis_threshold
        q = np.asarray(queries)[:, 0].round().astype(np.int64)
        occ[np.arange(len(q)), q] = False  # the query frame is visible by definition
        return tracks, occ

    return track


def flowpips_tracker(model, iters: int | None = None) -> Tracker:
    """FlowPips (chained flow + window update, ``FlowPips.track``); occluded = visibility logit < 0."""

    def track(frames: np.ndarray, queries: np.ndarray):
        tracks, logits = model.track(frames, queries, iters=iters)
        return tracks, logits < 0

    return track


def pips_tracker_from_checkpoint(path: str | os.PathLike, size: str = "small", iters: int = 6,
                                 stride: int | None = None, device=None,
                                 raft_checkpoint: str | os.PathLike | None = None,
                                 backbone: str | os.PathLike | None = None) -> Tracker:
    """``raft_checkpoint``: the RAFT-small weights a FlowPips tracker (size flow-small) was
    trained on; ``backbone``: other RAFT-small weights to run it on instead (a refined RAFT)."""
    from motionrefine.models.pips import load_pips
    from motionrefine.models.pips.flowpips import FLOWPIPS_SIZE, load_flowpips

    if size == FLOWPIPS_SIZE:  # ``iters``: its update iterations (None: the checkpoint's own)
        model, _ = load_flowpips(path, raft_checkpoint)
        if backbone is not None:
            model.load_raft(backbone)
        if device is not None:
            model.to(device)
        return flowpips_tracker(model, iters)

    model, _ = load_pips(path, size, stride=stride)
    if device is not None:
        model.to(device)
    return pips_tracker(model, iters, device=device)


def raft_chain_tracker(estimator, iters: int = 12, window: int = 8, alpha: float = 0.002,
                       beta: float = 0.1, variant: str = "small") -> Tracker:
    """Chained optical flow: ``estimator`` is an ``inference.FlowEstimator`` or the path of a
    RAFT checkpoint of architecture ``variant``. Flow is computed in windows of ``window``
    pairs (both directions)."""
    from motionrefine.flow.inference import FlowEstimator
    from motionrefine.track.chain import chain_flow_tracks

    if not isinstance(estimator, FlowEstimator):
        from motionrefine.models.checkpoint import load_raft

        model, _ = load_raft(estimator, variant)
        estimator = FlowEstimator(model, iters=iters)

    def track(frames: np.ndarray, queries: np.ndarray):
        fws, bws = [], []
        t = len(frames)
        for s in range(0, t - 1, window):
            fw, bw = estimator.pairs(frames[s:min(s + window, t - 1) + 1])
            fws.append(fw)
            bws.append(bw)
        return chain_flow_tracks(np.concatenate(fws), np.concatenate(bws), queries, alpha=alpha, beta=beta)

    return track


# --------------------------------------------------------------------------- evaluation

def evaluate_trackers(scenes: Sequence, trackers: Mapping[str, Tracker | Mapping[str, Tracker]],
                      query_mode: str | None = None, keep: dict | None = None) -> pd.DataFrame:
    """One row per (tracker, scene): delta_avg, aj, oa (TAP-Vid), survival, mte (256×256
    units), mte_px (scene pixels), plus n_tracks, frames, height, width, seconds.

    ``scenes``: TrackScene or SynthSequence objects; ``trackers``: name → tracker callable, or
    name → {scene name: callable} for a tracker refined on each scene itself (transductive),
    which runs only on the scenes it names.
    ``keep``: if given, filled with (tracker, scene) → (tracks, occluded) predictions.
    """
    scenes = [as_track_scene(s, query_mode=query_mode) for s in scenes]
    if not scenes or not trackers:
        raise MotionRefineError("evaluate_trackers needs at least one scene and one tracker")
    names = [s.name for s in scenes]
    if len(set(names)) != len(names):
        raise MotionRefineError(f"scene names must be unique: {names}")
    rows = []
    for tname, spec in trackers.items():
        for sc in scenes:
            fn = spec.get(sc.name) if isinstance(spec, Mapping) else spec
            if fn is None:
                continue
            T, H, W = sc.frames.shape[:3]
            queries = np.concatenate([sc.query_frame[:, None].astype(np.float64),
                                      sc.tracks[np.arange(len(sc.tracks)), sc.query_frame].astype(np.float64)], axis=1)
            t0 = time.perf_counter()
            with torch.no_grad():
                pred, occ = fn(sc.frames, queries)
            seconds = time.perf_counter() - t0
            pred = np.asarray(pred, np.float64)
            occ = np.asarray(occ, bool)
            if keep is not None:
                keep[(tname, sc.name)] = (pred, occ)
            if pred.shape != sc.tracks.shape or occ.shape != sc.occluded.shape:
                raise MotionRefineError(f"tracker {tname!r} returned {pred.shape}/{occ.shape} on {sc.name}, "
                                        f"expected {sc.tracks.shape}/{sc.occluded.shape}")
            scale = np.array([256.0 / W, 256.0 / H])
            gt256, pred256 = sc.tracks * scale, pred * scale
            tv = tapvid_metrics(gt256, sc.occluded, pred256, occ, sc.query_frame, sc.query_mode)
            pm = pips_metrics(gt256, pred256, valid=~sc.occluded, query_frame=sc.query_frame)
            pm_px = pips_metrics(sc.tracks, pred, valid=~sc.occluded, query_frame=sc.query_frame)
            rows.append({"tracker": tname, "scene": sc.name, "delta_avg": tv["delta_avg"], "aj": tv["aj"],
                         "oa": tv["oa"], "survival": pm["survival"], "mte": pm["mte"], "mte_px": pm_px["mte"],
                         "n_tracks": len(sc.tracks), "frames": T, "height": H, "width": W, "seconds": seconds})
            log.info("%s on %s: delta_avg %.3f AJ %.3f OA %.3f survival %.3f MTE %.2f (%.1f s)", tname, sc.name,
                     tv["delta_avg"], tv["aj"], tv["oa"], pm["survival"], pm["mte"], seconds)
    return pd.DataFrame(rows)


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over scenes per tracker (rows in the order trackers were given)."""
    order = list(dict.fromkeys(df["tracker"]))
    return df.groupby("tracker")[list(METRIC_COLUMNS)].mean().loc[order]


def _per_scene(build: Callable, *specs):
    """``build(*paths)`` once, or per scene when a spec is a {scene name: path} mapping (a
    transductive tracker: refined on each scene itself); plain paths serve every scene."""
    maps = [s for s in specs if isinstance(s, Mapping)]
    if not maps:
        return build(*specs)
    names = set.intersection(*(set(m) for m in maps))
    return {n: build(*(s[n] if isinstance(s, Mapping) else s for s in specs)) for n in sorted(names)}


def refinement_gains(df: pd.DataFrame, pairs: Mapping[str, str], metric: str = "delta_avg") -> pd.DataFrame:
    """Per scene, ``metric`` of each refined tracker minus its pretrained one (``pairs``:
    refined name → pretrained name), on the scenes both ran on; one row per (refined, scene)."""
    rows = []
    for refined, pretrained in pairs.items():
        a = df[df["tracker"] == pretrained].set_index("scene")[metric]
        b = df[df["tracker"] == refined].set_index("scene")[metric]
        for scene in [s for s in b.index if s in a.index]:
            rows.append({"tracker": refined, "versus": pretrained, "scene": scene, "before": float(a[scene]),
                         "after": float(b[scene]), "change": float(b[scene] - a[scene])})
    return pd.DataFrame(rows, columns=["tracker", "versus", "scene", "before", "after", "change"])


CHAINED_RAFT = "chained RAFT"
STAGES = ("pretrained", "refined heldout", "refined transductive")


def point_tracker_name(size: str) -> str:
    """What results/tracking/ calls the point tracker of ``size``. The shipped FlowPips tracker's
    window update outputs exactly zero positions, so its tracks are chained RAFT's and only its
    visibility head is learnt: it is "chained RAFT + visibility" until its update beats chained
    flow. A PIPs size is a tracker of its own: "PIPs"."""
    from motionrefine.models.pips.flowpips import FLOWPIPS_SIZE

    return "chained RAFT + visibility" if size == FLOWPIPS_SIZE else "PIPs"


def comparison_name(method: str, stage: str) -> str:
    """A row name of the comparison, e.g. "chained RAFT + visibility, refined heldout"."""
    if stage not in STAGES:
        raise MotionRefineError(f"unknown comparison stage {stage!r}; choose from {STAGES}")
    return f"{method}, {stage}"


def comparison_trackers(size: str, raft_pretrained: str, raft_refined: str, tracker_pretrained: str,
                        tracker_refined: str, tracker_raft: str | None = None, tracker_refined_raft: str | None = None,
                        transductive: Mapping[str, str] | None = None, tracker_transductive: bool = False) -> dict:
    """``tracker_comparison``'s raft, pips, tracker_raft, tracker_backbone and gains for rule
    track_eval, under the names results/tracking/ shows (``comparison_name``): chained RAFT and
    the point tracker, pretrained and refined heldout; with ``transductive`` ({scene: the RAFT
    refined on it}) chained RAFT refined transductive, and (``tracker_transductive``, FlowPips on
    RAFT-small) the pre-trained tracker on each scene's refined RAFT. ``tracker_raft`` /
    ``tracker_refined_raft``: the RAFT-small a FlowPips tracker was trained on (None: PIPs)."""
    raft_n = {st: comparison_name(CHAINED_RAFT, st) for st in STAGES}
    trk_n = {st: comparison_name(point_tracker_name(size), st) for st in STAGES}
    raft = {raft_n["pretrained"]: raft_pretrained, raft_n["refined heldout"]: raft_refined}
    pips = {trk_n["pretrained"]: tracker_pretrained, trk_n["refined heldout"]: tracker_refined}
    backbone = {}
    if transductive:
        raft[raft_n["refined transductive"]] = dict(transductive)
        if tracker_transductive:
            pips[trk_n["refined transductive"]] = tracker_pretrained
            backbone[trk_n["refined transductive"]] = dict(transductive)
    gains = {**{k: raft_n["pretrained"] for k in list(raft)[1:]}, **{k: trk_n["pretrained"] for k in list(pips)[1:]}}
    rafts = None
    if tracker_raft is not None:
        rafts = {trk_n["pretrained"]: tracker_raft, trk_n["refined heldout"]: tracker_refined_raft or tracker_raft,
                 trk_n["refined transductive"]: tracker_raft}
    return {"raft": raft, "pips": pips, "tracker_raft": rafts, "tracker_backbone": backbone, "gains": gains}


def tracker_comparison(scene_paths: Sequence[str], raft: Mapping[str, str | Mapping[str, str]],
                       pips: Mapping[str, str | Mapping[str, str]], size: str,
                       iters: int, raft_iters: int, out_table: str, out_figure: str, out_summary: str,
                       tapvid: Sequence[Mapping] = (), *, raft_variant: str, raft_fb_alpha: float = 0.002,
                       raft_fb_beta: float = 0.1, out_tracks_figure: str | None = None,
                       tracker_raft: Mapping[str, str | Mapping[str, str]] | None = None,
                       tracker_backbone: Mapping[str, str | Mapping[str, str]] | None = None,
                       gains: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Every tracker on every generated scene (and on TAP-Vid videos, ``tapvid`` entries with
    benchmark, name, path, options, read at the official 256×256): per-scene rows (CSV),
    per-scene δ_avg bars (the paper's TAP-Vid-DAVIS figure), and a markdown table of means.
    The ``raft`` checkpoints are of architecture ``raft_variant`` (the config's model.variant);
    their occlusion flags are the chained flow's forward-backward check (α, β = raft_fb_*).
    ``out_tracks_figure``: the point trackers' tracks of the first scene drawn on its frames.
    ``tracker_raft``: per FlowPips tracker of ``pips``, the RAFT-small weights it was trained
    on; ``tracker_backbone``: per FlowPips tracker, RAFT-small weights to run it on instead.
    A checkpoint given as {scene name (the store's stem): path} is a transductive tracker: it
    runs only on those scenes, each with its own weights.
    ``gains``: refined tracker → pretrained tracker; the summary gives their δ_avg change per scene."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from motionrefine import __version__
    from motionrefine.core.store import sha256_file
    from motionrefine.bench.synth import read_sequence

    scenes = [as_track_scene(read_sequence(p), name=Path(p).stem) for p in scene_paths]
    for spec in tapvid:
        from motionrefine.io.readers import read_tapvid

        found = list(read_tapvid(spec["path"], videos=[spec["name"]], **dict(spec.get("options") or {})))
        if not found:
            raise MotionRefineError(f"TAP-Vid video {spec['name']!r} not found in {spec['path']}")
        scenes.append(as_track_scene(found[0], name=f"{spec['benchmark']}/{spec['name']}"))
    trackers: dict = {}
    shas: dict = {}  # tracker -> sha256 of its file (or scene -> sha256)
    raft_shas: dict = {}  # FlowPips tracker -> sha256 of the RAFT-small it runs on (or scene -> sha256)
    for name, path in raft.items():
        trackers[name] = _per_scene(lambda p: raft_chain_tracker(p, iters=raft_iters, variant=raft_variant,
                                                                 alpha=raft_fb_alpha, beta=raft_fb_beta), path)
        shas[name] = _per_scene(sha256_file, path)
    for name, path in pips.items():
        rc, bb = (tracker_raft or {}).get(name), (tracker_backbone or {}).get(name)
        trackers[name] = _per_scene(lambda p, r, b: pips_tracker_from_checkpoint(p, size, iters=iters,
                                                                                 raft_checkpoint=r, backbone=b),
                                    path, rc, bb)
        shas[name] = _per_scene(sha256_file, path)
        if (bb or rc) is not None:
            raft_shas[name] = _per_scene(sha256_file, bb or rc)
    preds: dict = {}
    df = evaluate_trackers(scenes, trackers, keep=preds)
    if out_tracks_figure:
        # the point tracker's rows (before and after) keep the figure short; chained RAFT's where there is none
        shown = set(pips) or set(raft)
        tracks_figure(scenes[0], {k: v for k, v in preds.items() if k[1] == scenes[0].name and k[0] in shown},
                      out_tracks_figure)

    def sha_of(table: dict):
        def one(row):
            v = table.get(row["tracker"])
            return v.get(row["scene"]) if isinstance(v, Mapping) else v
        return df.apply(one, axis=1)

    df["checkpoint_sha256"] = sha_of(shas)
    df["raft_sha256"] = sha_of(raft_shas)
    df["code_version"] = __version__
    Path(out_table).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_table, index=False)

    names = list(trackers)
    scene_names = list(dict.fromkeys(df["scene"]))
    fig = Figure(figsize=(1.6 + 1.3 * len(scene_names), 3.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        mine = df[df["tracker"] == name].set_index("scene")["delta_avg"]
        xs = [i for i, s in enumerate(scene_names) if s in mine.index]
        ax.bar(np.array(xs) + (k - (len(names) - 1) / 2) * width, [mine[scene_names[i]] for i in xs], width,
               label=name)
    ax.set_xticks(np.arange(len(scene_names)), scene_names)
    ax.set_ylabel("δ_avg (TAP-Vid, 256×256)")
    ax.set_title("Long-range tracking on the real-texture scenes")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(out_figure, dpi=110, bbox_inches="tight")  # the legend sits outside the axes

    means = summary_table(df)
    counts = df.groupby("tracker")["scene"].count()
    lines = ["| tracker | scenes | " + " | ".join(METRIC_COLUMNS) + " |", "|---" * (len(METRIC_COLUMNS) + 2) + "|"]
    for name, row in means.iterrows():
        lines.append(f"| {name} | {counts[name]} | " + " | ".join(f"{row[c]:.3f}" for c in METRIC_COLUMNS) + " |")
    text = (f"Mean over the scenes each tracker ran on ({len(scene_names)} in all; TAP-Vid metrics at 256×256, "
            "strided queries on the generated scenes, the file's own on TAP-Vid videos; survival = share of the track before the first error > 16 px; MTE = median "
            "trajectory error). A transductive tracker is refined on each scene's own frames (no labels) and "
            "runs only there.\n\n" + "\n".join(lines) + "\n")
    change = refinement_gains(df, gains or {})
    if len(change):
        text += ("\nRefinement, δ_avg change per scene (points = 0.01):\n\n| tracker | versus | "
                 + " | ".join(dict.fromkeys(change["scene"])) + " | mean |\n" + "|---" * (change["scene"].nunique() + 3)
                 + "|\n")
        for (refined, versus), part in change.groupby(["tracker", "versus"], sort=False):
            by = part.set_index("scene")["change"]
            text += (f"| {refined} | {versus} | " + " | ".join(
                f"{100 * by[s]:+.1f}" if s in by.index else "" for s in dict.fromkeys(change["scene"]))
                + f" | {100 * by.mean():+.1f} |\n")
    Path(out_summary).write_text(text)
    return df


def tracks_figure(scene: TrackScene, preds: Mapping, out: str | os.PathLike, n_tracks: int = 24, seed: int = 0) -> None:
    """First and last frame of ``scene`` with ground-truth tracks (white) and each tracker's
    (colours), for ``n_tracks`` random query points; one row per tracker."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [k[0] for k in preds]
    T = len(scene.frames)
    pick = np.random.default_rng(seed).choice(len(scene.tracks), size=min(n_tracks, len(scene.tracks)), replace=False)
    fig = Figure(figsize=(7.0, 2.2 * max(1, len(names))))
    FigureCanvasAgg(fig)
    for r, key in enumerate(preds):
        pred, occ = preds[key]
        for c, t in enumerate((0, T - 1)):
            ax = fig.add_subplot(len(names), 2, 2 * r + c + 1)
            ax.imshow(scene.frames[t])
            for i in pick:
                g, p = scene.tracks[i, :t + 1], pred[i, :t + 1]
                ax.plot(g[:, 0], g[:, 1], "-", color="white", lw=0.8)
                ax.plot(p[:, 0], p[:, 1], "-", color="C3", lw=0.8)
                ax.plot(p[-1:, 0], p[-1:, 1], "o" if not occ[i, t] else "x", color="C3", ms=2.5)
            ax.set_axis_off()
            ax.set_title(f"{key[0]}, frame {t}", fontsize=7)
    fig.suptitle(f"{scene.name}: ground truth (white) vs predicted (red; x = predicted occluded)", fontsize=8)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def gt_window_tracks(flow_fw: np.ndarray, start: int, points: np.ndarray, S: int) -> np.ndarray:
    """Ground-truth tracks (N, S, 2) of points (N, 2) at frame ``start`` of a synthetic scene,
    by chaining its exact forward flow (bilinear between pixel centres)."""
    from motionrefine.models.pips.flowpips import flow_at

    p = torch.from_numpy(np.asarray(points, np.float64))
    out = [p]
    for t in range(start, start + S - 1):
        p = p + flow_at(torch.from_numpy(np.asarray(flow_fw[t])), p)
        out.append(p)
    return torch.stack(out, dim=1).numpy()


def label_quality(scene_path: str, teacher_flow: str | None, checkpoint: str, raft_checkpoint: str,
                  label_settings: Mapping) -> list[dict]:
    """Pseudo-labels on a generated scene from the FlowPips ``checkpoint`` (on ``raft_checkpoint``),
    per teacher (``teachers.flowpips_window_trackers``):
    tracks kept and their error against the ground truth (mean over frames 1..S−1 of the
    distance to the exact-flow track; ground truth used here for reporting only)."""
    from motionrefine.bench.synth import read_sequence
    from motionrefine.models.pips.flowpips import load_flowpips
    from motionrefine.track.labels import TrackLabelConfig, label_video
    from motionrefine.track.teachers import TEACHERS, flowpips_window_trackers, read_teacher_flow

    seq = read_sequence(scene_path)
    model, _ = load_flowpips(checkpoint, raft_checkpoint)
    cfg = TrackLabelConfig.from_dict({k: v for k, v in label_settings.items() if k not in ("size", "teachers")})
    flow = None
    teachers = [t for t in label_settings.get("teachers", TEACHERS)]
    if teacher_flow is not None:
        flow = read_teacher_flow(teacher_flow, *seq.frames.shape[:3])
    elif "flow" in teachers:
        teachers.remove("flow")
    rows = []
    S = model.cfg.S
    for name, fn in flowpips_window_trackers(model, seq.frames, flow, teachers).items():
        lab = label_video(seq.frames, None, cfg, S=S, window_tracker=fn)
        if name == "flow":
            fn.log_skipped(Path(scene_path).stem, len(lab["windows"]))
        err = np.zeros(0)
        if len(lab["tracks"]):
            gt = np.concatenate([gt_window_tracks(seq.flow_fw, int(s), lab["tracks"][lab["window_start"] == s][:, 0], S)
                                 for s in np.unique(lab["window_start"])])
            order = np.concatenate([np.flatnonzero(lab["window_start"] == s) for s in np.unique(lab["window_start"])])
            err = np.linalg.norm(lab["tracks"][order] - gt, axis=-1)[:, 1:].mean(axis=1)
        seeds = sum(w["seeds"] for w in lab["windows"])
        rows.append({"scene": Path(scene_path).stem, "teacher": name, "seeds": int(seeds),
                     "seeds_kept": int(sum(w["seeds_kept"] for w in lab["windows"])), "tracks": int(len(err)),
                     "err_mean_px": float(err.mean()) if len(err) else float("nan"),
                     "err_median_px": float(np.median(err)) if len(err) else float("nan"),
                     "within_1px": float((err < 1).mean()) if len(err) else float("nan"),
                     "theta_px": float(lab["resolved"]["theta"])})
        log.info("labels on %s, teacher %s: %d tracks kept, error mean %.2f px", rows[-1]["scene"], name,
                 rows[-1]["tracks"], rows[-1]["err_mean_px"])
    return rows
