"""KITTI 2015 training pairs as :class:`FlowScene`."""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from motionrefine.core.errors import MotionRefineError
from motionrefine.io.flow_formats import read_kitti_flow
from motionrefine.io.readers.images import read_rgb
from motionrefine.io.readers.layout import require_dir, select_scenes, training_root
from motionrefine.io.readers.scenes import FlowScene


def read_kitti2015(root, mode: str = "occ", scenes: Iterable[str] | None = None) -> Iterator[FlowScene]:
    """KITTI 2015 training pairs: ``image_2/XXXXXX_10.png``, ``_11.png`` and ``flow_{occ,noc}/XXXXXX_10.png``.

    ``mode="occ"`` scores all pixels with ground truth, ``"noc"`` only non-occluded ones.
    When both ground-truth folders exist, ``occluded`` = in flow_occ but not in flow_noc.
    """
    if mode not in ("occ", "noc"):
        raise MotionRefineError(f"KITTI mode must be 'occ' or 'noc', got {mode!r}")
    base = training_root(root)
    img_root = require_dir(base / "image_2", "KITTI image_2")
    gt_root = require_dir(base / f"flow_{mode}", f"KITTI flow_{mode}")
    other = base / ("flow_noc" if mode == "occ" else "flow_occ")
    available = sorted(p.name[:-len("_10.png")] for p in img_root.glob("*_10.png"))
    for scene in select_scenes(available, scenes, img_root):
        frames = np.stack([read_rgb(img_root / f"{scene}_10.png"), read_rgb(img_root / f"{scene}_11.png")])
        flow, valid = read_kitti_flow(gt_root / f"{scene}_10.png")
        if flow.shape[:2] != frames.shape[1:3]:
            raise MotionRefineError(f"{gt_root / f'{scene}_10.png'}: size {flow.shape[:2]} != image {frames.shape[1:3]}")
        occluded = None
        if (other / f"{scene}_10.png").is_file():
            _, valid_other = read_kitti_flow(other / f"{scene}_10.png")
            valid_occ, valid_noc = (valid, valid_other) if mode == "occ" else (valid_other, valid)
            occluded = (valid_occ & ~valid_noc)[None]
        yield FlowScene(scene, frames, flow[None], valid[None], occluded,
                        meta={"benchmark": "kitti2015", "mode": mode})
