"""The folder a training's resumable state lives in, named by what changes the result."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Sequence

log = logging.getLogger("motionrefine")

# Settings that change how a training runs, not its result: changing them keeps the state.
RUNTIME_KEYS = ("threads", "device", "processes", "shards", "log_every")


def training_workdir(root: str | os.PathLike, inputs: Sequence[str | os.PathLike], settings: dict) -> Path:
    """Folder for one training's resumable state, named by a fingerprint of what changes the
    result (input files' bytes or Zarr metadata, settings), so a killed job resumes while new
    labels or settings start afresh. Training state of other fingerprints is removed."""
    h = hashlib.sha256()
    for item in inputs:
        p = Path(item)
        if p.is_dir():  # a Zarr store: its metadata documents (attrs carry provenance and stats)
            for meta in sorted(p.rglob("zarr.json")):
                h.update(str(meta.relative_to(p)).encode())
                h.update(meta.read_bytes())
        else:
            h.update(p.read_bytes())
    h.update(json.dumps({k: v for k, v in settings.items() if k not in RUNTIME_KEYS}, sort_keys=True,
                        default=str).encode())
    root = Path(root)
    work = root / f"work-{h.hexdigest()[:16]}"
    for stale in root.glob("work-*"):
        if stale != work:
            log.info("removing training state of other inputs: %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
    return work
