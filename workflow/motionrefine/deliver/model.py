"""results/model/: the refined model a user keeps, applies to new clips and cites.

The files are copies of the guarded weights (never the unjudged ones) with the guard's
verdicts beside them, and model.json records each file's sha256 and what produced it, so a
deliverable's meta.json can name the model that made it by hash.
"""

from __future__ import annotations

import json
import shutil

from motionrefine import __version__
from motionrefine.core.store import sha256_file, write_atomic, write_text_atomic


def _copy(src: str, dst: str) -> str:
    write_atomic(dst, lambda tmp: shutil.copyfile(src, tmp))
    return sha256_file(dst)


def publish_model(raft: str, guard: str, out_raft: str, out_guard: str, out_manifest: str, variant: str = "small",
                  iters: int = 12, tracker: tuple[str, str, str, str] | None = None) -> dict:
    """Copy the guarded RAFT and its verdict (and the refined tracker, its RAFT being ``raft``,
    with its verdict) into place; write model.json last, so it appears only when all are there."""
    verdict = json.loads(open(guard).read())
    manifest = {
        "flow": {"file": "raft.pth", "sha256": _copy(raft, out_raft), "architecture": f"raft-{variant}",
                 "iters": iters, "kept": verdict.get("kept_weights"), "reason": verdict.get("reason"),
                 "verdict": "guard.json"},
        "apply": "snakemake infer --config infer='{checkpoint: <this folder>/raft.pth}' (see README, Your own footage)",
        "code_version": __version__,
    }
    _copy(guard, out_guard)
    if tracker is not None:
        src, src_guard, dst, dst_guard = tracker
        manifest["tracker"] = {"file": "tracker.pth", "sha256": _copy(src, dst), "runs_on": "raft.pth",
                               "verdict": "tracker-guard.json"}
        _copy(src_guard, dst_guard)
    write_text_atomic(out_manifest, json.dumps(manifest, indent=2))
    return manifest
