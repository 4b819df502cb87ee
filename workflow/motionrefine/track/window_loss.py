"""The FlowPips fine-tuning loss on one label window: the frozen RAFT's flow and features of
each video computed once (``WindowInputs``), the chained-flow initialisation from the label's
frame 0, and the sequence loss of the window update against the label track."""

from __future__ import annotations

import numpy as np
import torch

from motionrefine.core.store import open_group
from motionrefine.models.pips import sequence_loss
from motionrefine.models.pips.flowpips import chain_init, sample_features
from motionrefine.track.resolution import at_size
from motionrefine.track.samples import TrackSample


class WindowInputs:
    """The frozen part of FlowPips per (frames store, window start): the student's flow and
    features of the whole video, computed once per video (RAFT is frozen, so every step reuses them)."""

    def __init__(self, model):
        self.model, self.videos = model, {}

    def get(self, sample: TrackSample):
        """(fw, bw, feats, offset, size) of the sample's window, at the size its labels were made at."""
        key, start = (sample.frames, sample.size), sample.window_start
        if key not in self.videos:
            video = at_size(np.asarray(open_group(sample.frames)["frames"][...]), sample.size)
            self.videos[key] = self.model.flow_and_features(video) + (video.shape[1:3],)
        fw, bw, feats, offset, size = self.videos[key]
        S = self.model.cfg.S
        return fw[start:start + S - 1], bw[start:start + S - 1], feats[start:start + S], offset, size


def flowpips_track_loss(model, inputs: WindowInputs, sample: TrackSample, tracks: np.ndarray,
                        gamma: float, iters: int | None = None) -> tuple[torch.Tensor, dict]:
    """Sequence loss of FlowPips on one window's label tracks (S, n, 2) px (frames 1..S−1; the
    label's frame 0 is the anchor), initialised by the student's chained flow from there."""
    fw, bw, feats, offset, size = inputs.get(sample)
    S = model.cfg.S
    xy = torch.from_numpy(np.asarray(tracks[0], np.float64)).to(model.device)
    init, err, ok = chain_init(fw, bw, list(range(S)), xy, size, model.cfg.fb_alpha, model.cfg.fb_beta)
    template = sample_features(feats[0], xy, offset)
    preds, _ = model.update(feats[None], template[None], init[None].float(), err[None].float(), ok[None], offset,
                            size, iters, all_iters=True)
    target = torch.from_numpy(np.asarray(tracks, np.float32))[None].to(model.device)
    valid = torch.ones(target.shape[:3], device=target.device)
    valid[:, 0] = 0
    loss = sequence_loss(preds, target, valid, gamma)
    with torch.no_grad():
        epe = torch.linalg.vector_norm(preds[-1] - target, dim=-1)[:, 1:].mean().item()
        epe0 = torch.linalg.vector_norm(init[None].float() - target, dim=-1)[:, 1:].mean().item()
    return loss, {"seq_loss": loss.item(), "epe": epe, "epe_init": epe0}
