"""Pad images to a multiple of 8 (RAFT works at 1/8 scale) and crop results back."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class InputPadder:
    """Replicate padding. ``mode='even'`` splits the padding between both sides (the
    reference's default); ``mode='bottom_right'`` pads only at the bottom and right."""

    def __init__(self, shape, mode: str = "even", multiple: int = 8):
        h, w = shape[-2:]
        ph = (-h) % multiple
        pw = (-w) % multiple
        if mode == "even":
            self.pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        elif mode == "bottom_right":
            self.pad = (0, pw, 0, ph)
        else:
            raise ValueError(f"unknown padding mode {mode!r}")

    def pad_images(self, *images: torch.Tensor):
        out = [F.pad(x, self.pad, mode="replicate") for x in images]
        return out if len(out) > 1 else out[0]

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        left, right, top, bottom = self.pad
        h, w = x.shape[-2:]
        return x[..., top:h - bottom, left:w - right]
