"""Middlebury stereo (as flow) and Middlebury flow scenes as :class:`FlowScene`."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from motionrefine.core.errors import AssetMissingError, MotionRefineError
from motionrefine.io.flow_formats import flow_valid_mask, read_disparity, read_flo
from motionrefine.io.readers.images import read_rgb
from motionrefine.io.readers.layout import select_scenes
from motionrefine.io.readers.scenes import FlowScene


# --------------------------------------------------------------------------- Middlebury stereo as flow


def stereo_flow_scene(name: str, left: np.ndarray, right: np.ndarray, disparity: np.ndarray) -> FlowScene:
    """Rectified stereo pair as a 2-frame flow scene: left -> right flow is (−d, 0); valid = finite d."""
    if left.shape != right.shape or disparity.shape != left.shape[:2]:
        raise MotionRefineError(
            f"{name}: left {left.shape}, right {right.shape} and disparity {disparity.shape} sizes disagree")
    valid = np.isfinite(disparity)
    flow = np.zeros(disparity.shape + (2,), np.float32)
    flow[..., 0] = np.where(valid, -disparity, 0.0)
    return FlowScene(name, np.stack([left, right]), flow[None], valid[None], None,
                     meta={"benchmark": "middlebury_stereo"})


def read_middlebury_stereo_pair(left, right, disparity, name: str | None = None) -> FlowScene:
    """One stereo pair from explicit paths; disparity as ``.npz`` (arr_0), ``.npy`` or ``.pfm``."""
    left, right, disparity = Path(left), Path(right), Path(disparity)
    return stereo_flow_scene(name or left.parent.name, read_rgb(left), read_rgb(right), read_disparity(disparity))


def _stereo_files(d: Path) -> tuple[Path, Path, Path] | None:
    """Find (left, right, disparity) in a scene folder: Middlebury 2014 (im0/im1/disp0.pfm)
    or the ``<name>_left.png``/``_right.png``/``_disp.npz`` layout of ../shared."""
    if (d / "im0.png").is_file() and (d / "im1.png").is_file():
        for disp in ("disp0.pfm", "disp0GT.pfm", "disp0.npz", "disp0.npy"):
            if (d / disp).is_file():
                return d / "im0.png", d / "im1.png", d / disp
        return None
    for left in sorted(d.glob("*_left.png")):
        stem = left.name[: -len("_left.png")]
        right = d / f"{stem}_right.png"
        for ext in (".npz", ".pfm", ".npy"):
            disp = d / f"{stem}_disp{ext}"
            if right.is_file() and disp.is_file():
                return left, right, disp
    return None


def read_middlebury_stereo(root, scenes: Iterable[str] | None = None) -> Iterator[FlowScene]:
    """Middlebury stereo scenes as flow. ``root`` is one scene folder or a folder of scene folders."""
    r = Path(root)
    if not r.is_dir():
        raise AssetMissingError(f"Middlebury stereo folder not found: {r}")
    files = _stereo_files(r)
    if files is not None:
        candidates = {r.name: files}
    else:
        candidates = {d.name: f for d in sorted(r.iterdir()) if d.is_dir() and (f := _stereo_files(d))}
    if not candidates:
        raise MotionRefineError(f"{r}: no stereo scene found (im0.png/im1.png/disp0.pfm or *_left.png/*_right.png/*_disp.npz)")
    for scene in select_scenes(sorted(candidates), scenes, r):
        yield read_middlebury_stereo_pair(*candidates[scene], name=scene)


# --------------------------------------------------------------------------- Middlebury flow


_MIDDLEBURY_IMAGE_DIRS = ("other-gray-twoframes", "other-data-gray", "other-color-twoframes", "other-data")


def read_middlebury_flow(root, scenes: Iterable[str] | None = None) -> Iterator[FlowScene]:
    """Middlebury flow scenes (frame10.png, frame11.png, flow10.flo).

    Either everything in one folder per scene (``root/{scene}/``), or the official split
    layout ``root/other-gt-flow/{scene}/flow10.flo`` with the frames under
    ``root/other-gray-twoframes/{scene}/`` (or other-data-gray / other-color-twoframes /
    other-data). Grey frames are replicated to RGB; |flow| > 1e9 (unknown) is invalid.
    """
    r = Path(root)
    if not r.is_dir():
        raise AssetMissingError(f"Middlebury flow folder not found: {r}")
    if (r / "other-gt-flow").is_dir():
        gt_root = r / "other-gt-flow"
        img_root = next((r / d for d in _MIDDLEBURY_IMAGE_DIRS if (r / d).is_dir()), None)
        if img_root is None:
            raise AssetMissingError(f"{r}: none of {_MIDDLEBURY_IMAGE_DIRS} found beside other-gt-flow")
    else:
        gt_root = img_root = r
    available = sorted(d.name for d in gt_root.iterdir() if (d / "flow10.flo").is_file())
    if not available:
        raise MotionRefineError(f"{gt_root}: no scene folder with flow10.flo")
    for scene in select_scenes(available, scenes, gt_root):
        frames = np.stack([read_rgb(img_root / scene / "frame10.png"), read_rgb(img_root / scene / "frame11.png")])
        flo = read_flo(gt_root / scene / "flow10.flo")
        if flo.shape[:2] != frames.shape[1:3]:
            raise MotionRefineError(f"{gt_root / scene / 'flow10.flo'}: size {flo.shape[:2]} != frames {frames.shape[1:3]}")
        ok = flow_valid_mask(flo)
        flow = np.where(ok[..., None], flo, 0.0).astype(np.float32)
        yield FlowScene(scene, frames, flow[None], ok[None], None, meta={"benchmark": "middlebury_flow"})
