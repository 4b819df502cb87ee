"""The label-maker: the same frozen checkpoint, run at settings that know more than the student.

A pseudo-label only teaches what the student does not already know. The student runs at
its operating settings (native resolution, ``model.iters``); the teacher runs the same
weights on upsampled input (RAFT's 1/8-resolution correlation then resolves finer motion
and small structures), with more refinement iterations, and averages its estimate with
the one of the horizontally mirrored pair, whose errors are largely independent.

``TeacherSettings(scales=(1,), iters=<model.iters>, flip=False)`` is the paper's
self-labelling: the teacher is the student.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class TeacherSettings:
    scales: tuple[float, ...] = (2.0,)  # input scales; estimates at several scales are averaged
    iters: int = 32
    flip: bool = True                   # also run the mirrored pair and average
    # Cap on the upsampled input (height x width): the scale follows the frame size, since
    # upsampling helps small frames most and costs s^2 per pass. 0: no cap.
    max_pixels: int = 0

    def __post_init__(self):
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"teacher scales must be positive, got {self.scales}")
        if self.iters < 1:
            raise ValueError(f"teacher iters must be >= 1, got {self.iters}")

    def is_student(self, student_iters: int) -> bool:
        """True when the teacher is the student itself (the paper's self-labelling)."""
        return tuple(self.scales) == (1.0,) and not self.flip and self.iters == student_iters

    def scales_for(self, height: int, width: int) -> tuple[float, ...]:
        """The scales used on frames of this size: each capped by ``max_pixels``, never below 1."""
        if not self.max_pixels:
            return tuple(self.scales)
        cap = (self.max_pixels / (height * width)) ** 0.5
        return tuple(dict.fromkeys(max(1.0, min(s, cap)) if s >= 1 else s for s in self.scales))

    def as_attrs(self) -> dict:
        return {"scales": list(self.scales), "iters": self.iters, "flip": self.flip,
                "max_pixels": self.max_pixels}


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(8, round(height * scale)), max(8, round(width * scale))


def to_view(frames: np.ndarray, scale: float, flip: bool) -> np.ndarray:
    """(N, H, W, 3) frames as the teacher sees them: resized by ``scale``, mirrored if ``flip``.

    Returned as float32 so upsampling adds no rounding to uint8."""
    n, h, w, _ = frames.shape
    out = frames.astype(np.float32)
    if scale != 1.0:
        th, tw = scaled_size(h, w, scale)
        # INTER_LINEAR uses the half-pixel-centre convention that from_view inverts.
        out = np.stack([cv2.resize(f, (tw, th), interpolation=cv2.INTER_LINEAR) for f in out])
    if flip:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def from_view(flow: np.ndarray, height: int, width: int, flip: bool) -> np.ndarray:
    """(N, h', w', 2) flow of a view back to the frames' (N, H, W, 2) grid and pixel units."""
    if flip:
        # x' = W' - 1 - x: the image is mirrored, so positions mirror and u changes sign.
        flow = flow[:, :, ::-1].copy()
        flow[..., 0] = -flow[..., 0]
    n, vh, vw, _ = flow.shape
    if (vh, vw) == (height, width):
        return np.ascontiguousarray(flow, dtype=np.float32)
    # INTER_AREA averages the view pixels covering each frame pixel (an integer-factor
    # downsample is an exact box mean); INTER_LINEAR when the view is the smaller one.
    interp = cv2.INTER_AREA if vh * vw > height * width else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in flow])
    out[..., 0] *= width / vw
    out[..., 1] *= height / vh
    return out.astype(np.float32, copy=False)


class Teacher:
    """Teacher flow over consecutive pairs, with the interface of ``FlowEstimator.pairs``.

    ``estimator`` runs the frozen model at the teacher's iterations; every view (scale,
    mirror) encodes each frame once for both pairs and both directions, as the student does.
    """

    def __init__(self, estimator, settings: TeacherSettings):
        self.estimator = estimator
        self.settings = settings

    def views(self, height: int, width: int) -> list[tuple[float, bool]]:
        flips = (False, True) if self.settings.flip else (False,)
        return [(s, f) for s in self.settings.scales_for(height, width) for f in flips]

    def pairs(self, frames: np.ndarray, backward: bool = True):
        _, h, w, _ = frames.shape
        views = self.views(h, w)
        fw_sum = bw_sum = None
        for scale, flip in views:
            fw, bw = self.estimator.pairs(to_view(frames, scale, flip), backward)
            fw = from_view(fw, h, w, flip)
            fw_sum = fw if fw_sum is None else fw_sum + fw
            if backward:
                bw = from_view(bw, h, w, flip)
                bw_sum = bw if bw_sum is None else bw_sum + bw
        k = np.float32(len(views))
        return fw_sum / k, (bw_sum / k if backward else None)
