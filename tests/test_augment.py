"""Augmentation: labels follow the images through flips and crops; colour jitter semantics."""

import numpy as np
import pytest
import torch

from motionrefine.flow.augment import AugmentConfig, apply_jitter, augment, colour_jitter, crop_size
from motionrefine.core.errors import MotionRefineError
from motionrefine.core.geometry import backward_warp, inside_frame

NO_JITTER = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)


def smooth_texture(h, w, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (h // 4 + 2, w // 4 + 2, 3)).astype(np.float32)
    import cv2

    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255)


def consistent_sample(h=48, w=72, seed=0):
    """img1(x) = img2(x + F(x)) exactly (img1 is img2 bilinearly warped by a smooth, non-constant F)."""
    img2 = smooth_texture(h, w, seed)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    flow = np.stack([2.5 + 1.5 * np.sin(ys / 7.0), -1.25 + 0.05 * xs], axis=-1).astype(np.float32)
    t2 = torch.from_numpy(img2).permute(2, 0, 1)[None]
    tf = torch.from_numpy(flow).permute(2, 0, 1)[None]
    img1 = backward_warp(t2, tf)[0].permute(1, 2, 0).numpy()
    valid = inside_frame(tf)[0].numpy()
    return img1, img2, flow, valid


def warp_residual(out):
    """|img1 − img2 warped by flow| at pixels whose target stays inside the (cropped) frame."""
    i1 = torch.from_numpy(np.ascontiguousarray(out["img1"])).permute(2, 0, 1)[None]
    i2 = torch.from_numpy(np.ascontiguousarray(out["img2"])).permute(2, 0, 1)[None]
    f = torch.from_numpy(np.ascontiguousarray(out["flow"])).permute(2, 0, 1)[None]
    m = inside_frame(f)[0] & torch.from_numpy(out["valid"])
    return (i1 - backward_warp(i2, f))[0].abs().amax(0)[m], m


@pytest.mark.parametrize("hflip,vflip", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_flow_stays_consistent_with_the_images_after_flips_and_crop(hflip, vflip):
    img1, img2, flow, valid = consistent_sample()
    res, m = warp_residual({"img1": img1, "img2": img2, "flow": flow, "valid": valid})
    assert res.max() < 1e-3  # the construction itself
    cfg = AugmentConfig(crop=(32, 48), hflip_prob=hflip, vflip_prob=vflip, **NO_JITTER)
    for seed in range(3):
        out = augment(img1, img2, flow, valid, rng=np.random.default_rng(seed), config=cfg)
        assert out["img1"].shape == (32, 48, 3) and out["flow"].shape == (32, 48, 2)
        res, m = warp_residual(out)
        assert m.sum() > 500
        assert res.max() < 1e-3


def test_flips_move_and_negate_flow_exactly():
    h, w = 16, 24
    rng = np.random.default_rng(0)
    flow = rng.normal(size=(h, w, 2)).astype(np.float32)
    img = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
    valid = rng.random((h, w)) < 0.5
    weight = rng.random((h, w)).astype(np.float32)
    base = dict(crop=(h, w), **NO_JITTER)
    out = augment(img, img, flow, valid, weight, rng=np.random.default_rng(0),
                  config=AugmentConfig(hflip_prob=1, vflip_prob=0, **base))
    y, x = 3, 5
    assert np.allclose(out["flow"][y, w - 1 - x], [-flow[y, x, 0], flow[y, x, 1]])
    assert out["valid"][y, w - 1 - x] == valid[y, x] and out["weight"][y, w - 1 - x] == weight[y, x]
    assert np.allclose(out["img1"][y, w - 1 - x], img[y, x])
    out = augment(img, img, flow, valid, weight, rng=np.random.default_rng(0),
                  config=AugmentConfig(hflip_prob=0, vflip_prob=1, **base))
    assert np.allclose(out["flow"][h - 1 - y, x], [flow[y, x, 0], -flow[y, x, 1]])
    assert out["valid"][h - 1 - y, x] == valid[y, x] and out["weight"][h - 1 - y, x] == weight[y, x]


def test_crop_size_rule():
    assert crop_size(360, 640, (256, 512)) == (256, 512)
    assert crop_size(50, 70, (64, 96)) == (48, 64)  # largest multiples of 8 that fit
    with pytest.raises(MotionRefineError):
        crop_size(5, 70, (64, 96))
    with pytest.raises(MotionRefineError):
        AugmentConfig(crop=(60, 96))
    img1, img2, flow, valid = consistent_sample(50, 70)
    out = augment(img1, img2, flow, valid, rng=np.random.default_rng(0), config=AugmentConfig(crop=(64, 96)))
    assert out["img1"].shape[:2] == (48, 64)


def test_seeded_and_torch_layout_matches_numpy():
    img1, img2, flow, valid = consistent_sample()
    cfg = AugmentConfig(crop=(32, 40))
    a = augment(img1, img2, flow, valid, rng=np.random.default_rng(7), config=cfg)
    b = augment(img1, img2, flow, valid, rng=np.random.default_rng(7), config=cfg)
    for k in ("img1", "img2", "flow", "valid"):
        assert np.array_equal(a[k], b[k])
    t = augment(torch.from_numpy(img1).permute(2, 0, 1), torch.from_numpy(img2).permute(2, 0, 1),
                torch.from_numpy(flow).permute(2, 0, 1), torch.from_numpy(valid),
                rng=np.random.default_rng(7), config=cfg)
    assert isinstance(t["img1"], torch.Tensor) and t["img1"].shape == (3, 32, 40) and t["flow"].shape == (2, 32, 40)
    assert np.allclose(t["img1"].permute(1, 2, 0).numpy(), a["img1"])
    assert np.allclose(t["flow"].permute(1, 2, 0).numpy(), a["flow"])
    assert torch.equal(t["valid"], torch.from_numpy(a["valid"]))


def test_no_aug_is_a_plain_crop_and_keep_raw_skips_jitter():
    img1, img2, flow, valid = consistent_sample()
    out = augment(img1, img2, flow, valid, rng=np.random.default_rng(3),
                  config=AugmentConfig(crop=(32, 40), no_aug=True))
    y0, x0 = out["crop_origin"]
    assert np.array_equal(out["img1"], img1[y0:y0 + 32, x0:x0 + 40])
    assert np.array_equal(out["flow"], flow[y0:y0 + 32, x0:x0 + 40])
    centre = augment(img1, img2, flow, valid, rng=np.random.default_rng(3),
                     config=AugmentConfig(crop=(32, 40), no_aug=True, random_crop=False))
    assert centre["crop_origin"] == ((48 - 32) // 2, (72 - 40) // 2)
    # keep_raw: same crop and flips, no jitter, so photometric relations survive.
    cfg = AugmentConfig(crop=(32, 48), hflip_prob=1.0)
    out = augment(img1, img2, flow, valid, rng=np.random.default_rng(0), config=cfg, keep_raw=True)
    assert not np.allclose(out["img1"], out["raw1"])
    res, _ = warp_residual({"img1": out["raw1"], "img2": out["raw2"], "flow": out["flow"], "valid": out["valid"]})
    assert res.max() < 1e-3


def test_symmetric_and_asymmetric_jitter():
    img = smooth_texture(24, 32)
    sym = AugmentConfig(asymmetric_prob=0.0)
    asym = AugmentConfig(asymmetric_prob=1.0)
    for seed in range(3):
        a, b = colour_jitter(img, img, sym, np.random.default_rng(seed))
        assert np.array_equal(a, b)  # the same jitter for both frames
        a, b = colour_jitter(img, img, asym, np.random.default_rng(seed))
        assert not np.allclose(a, b)
        assert a.min() >= 0 and a.max() <= 255
    # With probability 0.2 the frames get independent jitter.
    cfg = AugmentConfig()
    n_asym = 0
    for seed in range(400):
        a, b = colour_jitter(img[:4, :4], img[:4, :4], cfg, np.random.default_rng(seed))
        n_asym += not np.array_equal(a, b)
    assert 0.14 < n_asym / 400 < 0.26


def test_jitter_operations():
    red = np.zeros((2, 2, 3), np.float32)
    red[..., 0] = 1.0
    # Hue +1/3 of the circle turns red into green.
    assert np.allclose(apply_jitter(red, [("hue", 1 / 3)]), [0, 1, 0], atol=1e-5)
    grey = np.full((2, 2, 3), 0.5, np.float32)
    assert np.allclose(apply_jitter(grey, [("brightness", 1.2)]), 0.6)
    assert np.allclose(apply_jitter(grey, [("saturation", 0.0), ("contrast", 1.4)]), 0.5)
    assert np.allclose(apply_jitter(red, [("saturation", 0.0)]), 0.299, atol=1e-6)
    assert np.allclose(apply_jitter(red, [("brightness", 2.0)]).max(), 1.0)  # clipped
    assert AugmentConfig().hue == pytest.approx(0.5 / np.pi)
    with pytest.raises(MotionRefineError):
        AugmentConfig.from_dict({"crops": [8, 8]})
