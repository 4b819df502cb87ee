"""Loss weights by the pretrained student's disagreement (flow.focus) and crops drawn by them."""

import numpy as np
import pytest

from motionrefine.core.errors import MotionRefineError
from motionrefine.flow.augment import AugmentConfig, augment, origin_weights
from motionrefine.flow.finetune_config import FinetuneConfig
from motionrefine.flow.focus import CAP, focus_weights


def test_focus_weights_follow_the_disagreement_on_training_pixels_only():
    h, w = 6, 8
    label = np.zeros((h, w, 2), np.float32)
    student = np.zeros_like(label)
    student[:, :4, 0] = 2.0  # disagree by 2 px on the left half, agree on the right
    valid = np.ones((h, w), bool)
    valid[0] = False
    uniform = focus_weights(label, student, valid, 0.0)
    assert (uniform[valid] == 1).all() and (uniform[~valid] == 0).all()
    full = focus_weights(label, student, valid, 1.0)
    # in proportion: mean disagreement 1 px, so 2 where it is 2 px and 0 where the student is right
    assert np.allclose(full[1:, :4], 2.0) and np.allclose(full[1:, 4:], 0.0) and (full[0] == 0).all()
    half = focus_weights(label, student, valid, 0.5)
    assert np.allclose(half[1:, :4], 1.5) and np.allclose(half[1:, 4:], 0.5)
    assert half[valid].mean() == pytest.approx(1.0)


def test_focus_weights_cap_an_outlier_and_stay_uniform_without_disagreement():
    label = np.zeros((10, 10, 2), np.float32)
    student = np.zeros_like(label)
    student[0, 0] = 1000.0  # one wrong label the check let through
    student[1:, :, 0] = 0.1
    w = focus_weights(label, student, np.ones((10, 10), bool), 1.0)
    assert w[0, 0] == pytest.approx(CAP)
    same = focus_weights(label, label.copy(), np.ones((10, 10), bool), 1.0)
    assert (same == 1).all()
    assert (focus_weights(label, student, np.zeros((10, 10), bool), 1.0) == 0).all()


def test_origin_weights_are_each_crops_mass_plus_a_floor():
    weight = np.zeros((5, 6))
    weight[4, 5] = 1.0  # only crops touching the corner hold weight
    p = origin_weights(weight, (2, 3), floor=0.0).reshape(4, 4)
    assert p.sum() == pytest.approx(1.0)
    assert p[3, 3] == pytest.approx(1.0) and p[:3].sum() == 0
    # brute force over every origin, with the floor
    mass = np.array([[weight[y:y + 2, x:x + 3].sum() for x in range(4)] for y in range(4)])
    want = mass + 0.1 * mass.mean()
    assert np.allclose(origin_weights(weight, (2, 3)), (want / want.sum()).ravel())
    flat = origin_weights(np.zeros((5, 6)), (2, 3))
    assert np.allclose(flat, 1 / 16)


def test_weighted_crops_go_where_the_weight_is():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    flow = np.zeros((64, 96, 2), np.float32)
    valid = np.ones((64, 96), bool)
    weight = np.zeros((64, 96), np.float32)
    weight[:16, :16] = 1.0  # the top-left corner
    cfg = AugmentConfig(crop=(32, 32), no_aug=True)

    def hits(weighted):
        n = 0
        for s in range(200):
            out = augment(img, img, flow, valid, weight, rng=np.random.default_rng(s), config=cfg,
                          weighted_crop=weighted)
            n += out["weight"].sum() > 0
        return n

    # 16 x 16 of the 33 x 65 origins touch the corner: about one uniform crop in eight
    assert hits(False) < 80 and hits(True) > 170


def test_focus_settings_are_checked():
    assert FinetuneConfig().focus == 0 and not FinetuneConfig().focus_crops
    with pytest.raises(MotionRefineError, match="focus must be in"):
        FinetuneConfig(focus=1.5)
    with pytest.raises(MotionRefineError, match="set focus > 0"):
        FinetuneConfig(focus_crops=True)
    assert FinetuneConfig.from_dict({"focus": 0.5, "focus_crops": True}).focus_crops
