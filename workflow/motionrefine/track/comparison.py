"""The tracking comparison of rule track_eval: chained RAFT and the point tracker, pretrained and
refined, on the generated scenes and TAP-Vid videos; the rows' names; eval.csv, then the
figures and summary.md (``track.comparison_report``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd

from motionrefine.core.errors import MotionRefineError
from motionrefine.track.comparison_report import delta_avg_figure, summary_markdown, tracks_figure
from motionrefine.track.eval_scenes import as_track_scene
from motionrefine.track.evaluate import evaluate_trackers
from motionrefine.track.trackers import pips_tracker_from_checkpoint, raft_chain_tracker

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


def _per_scene(build: Callable, *specs):
    """``build(*paths)`` once, or per scene when a spec is a {scene name: path} mapping (a
    transductive tracker: refined on each scene itself); plain paths serve every scene."""
    maps = [s for s in specs if isinstance(s, Mapping)]
    if not maps:
        return build(*specs)
    names = set.intersection(*(set(m) for m in maps))
    return {n: build(*(s[n] if isinstance(s, Mapping) else s for s in specs)) for n in sorted(names)}


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
    A checkpoint given as {scene name (``plan.track_scene_names``): path} is a transductive tracker: it
    runs only on those scenes, each with its own weights.
    ``gains``: refined tracker → pretrained tracker; the summary gives their δ_avg change per scene."""
    from motionrefine import __version__
    from motionrefine.core.store import sha256_file
    from motionrefine.bench.synth import read_sequence

    from motionrefine.config.plan import track_scene_names

    scenes = [as_track_scene(read_sequence(p), name=n) for p, n in zip(scene_paths, track_scene_names(scene_paths))]
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

    delta_avg_figure(df, list(trackers), out_figure)
    Path(out_summary).write_text(summary_markdown(df, gains or {}))
    return df
