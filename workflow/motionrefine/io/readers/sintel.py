"""MPI-Sintel training scenes as :class:`FlowScene`."""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from motionrefine.core.errors import AssetMissingError, MotionRefineError
from motionrefine.io.flow_formats import flow_valid_mask, read_flo
from motionrefine.io.readers.images import read_mask, read_rgb
from motionrefine.io.readers.layout import require_dir, select_scenes, training_root
from motionrefine.io.readers.scenes import FlowScene


def read_sintel(root, split: str = "final", scenes: Iterable[str] | None = None,
                max_frames: int | None = None, occlusions: bool = True) -> Iterator[FlowScene]:
    """MPI-Sintel training scenes (``training/{clean,final,flow,occlusions}/{scene}/frame_XXXX.*``).

    ``flow/{scene}/frame_0001.flo`` is the pair frame_0001 -> frame_0002; an occlusion PNG
    is white where the pixel of frame t is occluded in t+1. ``max_frames`` keeps the first
    frames of each scene (for quick runs). Occlusion masks are attached when present.
    """
    if split not in ("clean", "final"):
        raise MotionRefineError(f"Sintel split must be 'clean' or 'final', got {split!r}")
    base = training_root(root)
    img_root = require_dir(base / split, f"Sintel {split}")
    flow_root = require_dir(base / "flow", "Sintel flow")
    occ_root = base / "occlusions"
    available = sorted(d.name for d in img_root.iterdir() if d.is_dir())
    for scene in select_scenes(available, scenes, img_root):
        frame_files = sorted((img_root / scene).glob("frame_*.png"))
        if max_frames is not None:
            frame_files = frame_files[:max_frames]
        if len(frame_files) < 2:
            raise MotionRefineError(f"{img_root / scene}: needs at least 2 frame_XXXX.png files, found {len(frame_files)}")
        frames = np.stack([read_rgb(f) for f in frame_files])
        flows, valids, occs = [], [], []
        have_occ = occlusions and (occ_root / scene).is_dir()
        for f in frame_files[:-1]:
            flo = read_flo(flow_root / scene / (f.stem + ".flo"))
            if flo.shape[:2] != frames.shape[1:3]:
                raise MotionRefineError(f"{flow_root / scene / (f.stem + '.flo')}: size {flo.shape[:2]} != frames {frames.shape[1:3]}")
            ok = flow_valid_mask(flo)
            flows.append(np.where(ok[..., None], flo, 0.0).astype(np.float32))
            valids.append(ok)
            if have_occ:
                occ_file = occ_root / scene / f.name
                if not occ_file.is_file():
                    raise AssetMissingError(f"Sintel occlusion mask not found: {occ_file}")
                occs.append(read_mask(occ_file))
        yield FlowScene(scene, frames, np.stack(flows), np.stack(valids),
                        np.stack(occs) if have_occ else None,
                        meta={"benchmark": "sintel", "split": split, "frames": [f.name for f in frame_files]})
