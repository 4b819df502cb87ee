"""The guard: held-back pixels, label-free signals, and the keep/revert decision."""

import numpy as np

from motionrefine.flow.guard import HoldOut, decide, model_signals


class Fixed:
    """A stand-in student whose flow is the label plus a fixed error."""

    def __init__(self, label_fw, label_bw, error):
        self.fw, self.bw, self.error = label_fw, label_bw, error

    def pairs(self, frames, backward=True):
        return self.fw + self.error, self.bw - self.error


def scene(h=48, w=64):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (3, h, w, 3), dtype=np.uint8)
    lab_fw = np.full((2, h, w, 2), 1.5, np.float32)
    lab_bw = -lab_fw
    keep = rng.random((2, h, w)) < 0.3
    return frames, lab_fw, keep, lab_bw, keep


def test_holdout_blocks_cover_a_fifth_everywhere():
    m = HoldOut(block=16, every=5).mask(160, 320)
    assert abs(m.mean() - 0.2) < 0.01
    # every 80x80 region holds some held-back blocks, so any training crop is sampled
    for y in range(0, 160, 80):
        for x in range(0, 320, 80):
            assert m[y:y + 80, x:x + 80].mean() > 0.1


def test_guard_reverts_a_worse_refinement_and_keeps_a_better_one():
    frames, lab_fw, keep, lab_bw, keep_bw = scene()
    groups = [(frames, lab_fw, keep, lab_bw, keep_bw)]
    hold = HoldOut()
    pretrained = model_signals(Fixed(lab_fw, lab_bw, np.float32(0.4)), groups, hold)
    worse = model_signals(Fixed(lab_fw, lab_bw, np.float32(1.0)), groups, hold)
    better = model_signals(Fixed(lab_fw, lab_bw, np.float32(0.1)), groups, hold)
    np.testing.assert_allclose(pretrained["agreement_epe"], 0.4 * np.sqrt(2), rtol=1e-5)
    assert pretrained["agreement_pixels"] > 0
    assert decide(pretrained, worse)["keep_refined"] is False
    assert decide(pretrained, better)["keep_refined"] is True
    # an improvement smaller than the margin is not enough
    assert decide(pretrained, better, margin=0.9)["keep_refined"] is False


def test_guard_without_held_back_labels_keeps_pretrained():
    nan = {"agreement_epe": float("nan")}
    verdict = decide(nan, {"agreement_epe": 0.1})
    assert verdict["keep_refined"] is False and "no held-back" in verdict["reason"]
