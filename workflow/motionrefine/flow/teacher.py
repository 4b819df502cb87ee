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
    # The label budget of one video: every ``pair_stride``-th pair, at most ``max_pairs`` of
    # them, and at most ``max_megapixels`` of teacher input (the upsampled frame's area
    # summed over the labelled pairs). Pairs beyond a budget are dropped evenly over the
    # video, so long or large videos keep their whole time span. 0: no cap.
    pair_stride: int = 1
    max_pairs: int = 0
    max_megapixels: float = 0.0

    def __post_init__(self):
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"teacher scales must be positive, got {self.scales}")
        if self.iters < 1:
            raise ValueError(f"teacher iters must be >= 1, got {self.iters}")
        if self.pair_stride < 1 or self.max_pairs < 0 or self.max_megapixels < 0:
            raise ValueError(f"teacher pair budget must be pair_stride >= 1, max_pairs >= 0, max_megapixels >= 0; "
                             f"got {self.pair_stride}, {self.max_pairs}, {self.max_megapixels}")

    def is_student(self, student_iters: int) -> bool:
        """True when the teacher is the student itself (the paper's self-labelling)."""
        return tuple(self.scales) == (1.0,) and not self.flip and self.iters == student_iters

    def scales_for(self, height: int, width: int) -> tuple[float, ...]:
        """The scales used on frames of this size: each capped by ``max_pixels``, never below 1."""
        if not self.max_pixels:
            return tuple(self.scales)
        cap = (self.max_pixels / (height * width)) ** 0.5
        return tuple(dict.fromkeys(max(1.0, min(s, cap)) if s >= 1 else s for s in self.scales))

    def select_pairs(self, n_pairs: int, height: int, width: int) -> np.ndarray:
        """Indices of the pairs (t, t+1) the teacher labels, sorted; at least one."""
        candidates = np.arange(0, n_pairs, self.pair_stride)
        cap = len(candidates)
        if self.max_pairs:
            cap = min(cap, self.max_pairs)
        if self.max_megapixels:
            th, tw = scaled_size(height, width, max(self.scales_for(height, width)))
            cap = min(cap, int(self.max_megapixels * 1e6 // (th * tw)))
        cap = max(1, cap)
        if cap >= len(candidates):
            return candidates
        # Evenly over the candidates, first and last included.
        return candidates[np.round(np.linspace(0, len(candidates) - 1, cap)).astype(int)]

    def budget_attrs(self, selected: np.ndarray, n_pairs: int) -> dict:
        """The label budget as recorded in the stores: the settings and the pairs it chose."""
        return {"pair_stride": self.pair_stride, "max_pairs": self.max_pairs, "max_megapixels": self.max_megapixels,
                "pairs": int(n_pairs), "labelled": int(len(selected)), "labelled_pairs": [int(i) for i in selected]}

    def as_attrs(self) -> dict:
        return {"scales": list(self.scales), "iters": self.iters, "flip": self.flip,
                "max_pixels": self.max_pixels, "pair_stride": self.pair_stride, "max_pairs": self.max_pairs,
                "max_megapixels": self.max_megapixels}


def pair_windows(pairs: np.ndarray, batch_size: int) -> list[tuple[int, int]]:
    """Half-open pair ranges [s, e) covering ``pairs`` (sorted): runs of consecutive pairs,
    each cut into windows of at most ``batch_size`` pairs counted from the run's start.

    A window of k pairs encodes k+1 frames once; with every pair selected this is
    ``range(0, n, batch_size)``, the flow stage's windows."""
    out = []
    i = 0
    pairs = [int(p) for p in pairs]
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1] == pairs[j] + 1:
            j += 1
        for s in range(pairs[i], pairs[j] + 1, max(1, batch_size)):
            out.append((s, min(s + max(1, batch_size), pairs[j] + 1)))
        i = j + 1
    return out


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
