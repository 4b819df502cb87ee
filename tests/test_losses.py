"""Losses (sequence loss masked per sample, photometric, smoothness, cycle) and speed-bin weights."""

import math

import numpy as np
import pytest
import torch

from motionrefine.flow.losses import (charbonnier, cycle_loss, masked_mean_per_sample, photometric_loss,
                                 sequence_loss, sequence_weights, smoothness_loss)
from motionrefine.flow.rebalance import speed_bin_weights


def official_broadcast_loss(pred, label, valid):
    """The official code's reduction: mean(valid[:, None] * |pred − label|) with valid (B,1,H,W):
    (B,1,1,H,W) × (B,2,H,W) broadcasts to (B, B, 2, H, W), so sample j's error is weighted by
    every sample's mask, and the sum is divided by all pixels."""
    assert valid.dim() == 4 and valid.shape[1] == 1
    out = valid[:, None].float() * (pred - label).abs()
    assert out.shape == (pred.shape[0],) + tuple(pred.shape)
    return out.mean()


def test_sequence_loss_is_masked_per_sample():
    b, h, w = 2, 8, 8
    label = torch.zeros(b, 2, h, w)
    pred = torch.zeros(b, 2, h, w)
    valid = torch.zeros(b, h, w, dtype=torch.bool)
    valid[0, 0, 0] = True  # sample 0: one valid pixel with error 10 in u and v
    pred[0, :, 0, 0] = 10.0
    valid[1] = True  # sample 1: all valid, error 0
    pred[0, :, 5, 5] = 1000.0  # masked pixels are ignored, however wrong
    loss, metrics = sequence_loss([pred], label, valid)
    assert loss.item() == pytest.approx((10.0 + 0.0) / 2)
    assert metrics["epe"] == pytest.approx(10 * math.sqrt(2) / (1 + h * w))
    # The official batch-averaged mask gives a different value (dominated by the masked outlier).
    # Official: Σ_i Σ_p valid_i(p)·Σ_c err_0(c, p) = 2·20 (pixel (0,0)) + 1·2000 (the outlier at (5,5),
    # valid in sample 1 only) over B·B·2·H·W = 512 entries.
    official = official_broadcast_loss(pred, label, valid.unsqueeze(1)).item()
    assert official == pytest.approx((2 * 20 + 2000) / 512)
    assert official != pytest.approx(loss.item(), rel=0.1)
    # A sample with no valid pixel contributes 0 (and no NaN).
    valid2 = valid.clone()
    valid2[1] = False
    loss2, _ = sequence_loss([pred], label, valid2)
    assert loss2.item() == pytest.approx(10.0 / 2)
    loss3, m3 = sequence_loss([pred], label, torch.zeros_like(valid))
    assert loss3.item() == 0.0 and math.isnan(m3["epe"])


def test_sequence_loss_gamma_weights_max_flow_and_pixel_weights():
    assert sequence_weights(3, 0.85) == pytest.approx([0.85 ** 2, 0.85, 1.0])
    label = torch.zeros(1, 2, 4, 4)
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    p1 = torch.full_like(label, 2.0)
    p2 = torch.full_like(label, 1.0)
    loss, _ = sequence_loss([p1, p2], label, valid, gamma=0.5)
    assert loss.item() == pytest.approx(0.5 * 2.0 + 1.0)
    # |label| >= max_flow is excluded; non-finite labels too.
    label2 = label.clone()
    label2[0, 0, 0, 0] = 500.0
    label2[0, 1, 1, 1] = float("nan")
    loss, _ = sequence_loss([p2], label2, valid)
    assert loss.item() == pytest.approx(1.0)
    # Per-pixel weights: a weighted mean over valid pixels.
    pred = torch.zeros_like(label)
    pred[0, :, 0, 0] = 4.0
    weight = torch.ones(1, 4, 4)
    weight[0, 0, 0] = 3.0
    loss, _ = sequence_loss([pred], label, valid, weight)
    assert loss.item() == pytest.approx(3 * 4.0 / (15 + 3))
    assert masked_mean_per_sample(torch.ones(2, 2, 2), torch.zeros(2, 2, 2)).item() == 0.0


def test_sequence_loss_gradient_only_through_valid_pixels():
    pred = torch.randn(2, 2, 6, 6, requires_grad=True)
    valid = torch.rand(2, 6, 6) < 0.3
    loss, _ = sequence_loss([pred], torch.zeros(2, 2, 6, 6), valid)
    loss.backward()
    assert (pred.grad.abs().sum(1)[~valid] == 0).all()
    assert (pred.grad.abs().sum(1)[valid] > 0).all()


def shifted_pair(u, v, h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    big = torch.from_numpy(rng.uniform(0, 255, (1, 3, h + 20, w + 20)).astype(np.float32))
    i1 = big[..., 10:10 + h, 10:10 + w]
    i2 = big[..., 10 - v:10 - v + h, 10 - u:10 - u + w]  # I2(x + (u, v)) = I1(x)
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0], flow[:, 1] = float(u), float(v)
    return i1, i2, flow


def test_photometric_loss_zero_for_the_true_flow():
    i1, i2, flow = shifted_pair(3, -2)
    interior = torch.zeros(1, 24, 32, dtype=torch.bool)
    interior[:, 4:-4, 4:-4] = True
    assert photometric_loss(i1, i2, flow, interior).item() < 1e-6
    assert photometric_loss(i1, i2, flow, interior, ssim_weight=0.85).item() < 1e-5
    # Out-of-frame targets are masked automatically; a wrong flow costs.
    assert photometric_loss(i1, i2, flow).item() < 1e-6
    assert photometric_loss(i1, i2, flow + 1.0, interior).item() > 0.05
    assert photometric_loss(i1, i2, torch.zeros_like(flow), interior, ssim_weight=0.85).item() > 0.05
    assert charbonnier(torch.zeros(3)).abs().max().item() == 0.0


def test_smoothness_loss():
    img = torch.rand(2, 3, 16, 16) * 255
    const = torch.zeros(2, 2, 16, 16)
    const[:, 0], const[:, 1] = 3.0, -1.5
    assert smoothness_loss(const, img).item() == 0.0
    ramp = torch.arange(16.0).expand(2, 2, 16, 16).clone()
    flat = torch.full_like(img, 128.0)
    edges = torch.zeros_like(img)
    edges[..., ::2] = 255.0  # strong vertical edges everywhere
    assert smoothness_loss(ramp, flat).item() == pytest.approx(1.0)  # |∂x| = 1, |∂y| = 0, no edges
    assert smoothness_loss(ramp, edges).item() < smoothness_loss(ramp, flat).item()


def test_cycle_loss():
    f = torch.zeros(1, 2, 12, 16)
    f[:, 0], f[:, 1] = 2.0, 1.0
    assert cycle_loss(f, -f).item() == 0.0
    assert cycle_loss(f, -f + torch.tensor([1.0, 0.0])[None, :, None, None]).item() == pytest.approx(1.0, abs=1e-3)
    ff = f.clone().requires_grad_(True)
    fb = (-f).clone().requires_grad_(True)
    cycle_loss(ff, fb).backward()
    assert torch.isfinite(ff.grad).all() and torch.isfinite(fb.grad).all()


def test_speed_bin_weights_equalise_bins():
    flow = torch.zeros(1, 2, 10, 10)
    flow[0, 0, :8] = 0.5  # 80 slow pixels
    flow[0, 0, 8:] = 6.0  # 20 fast pixels
    keep = torch.ones(1, 10, 10, dtype=torch.bool)
    keep[0, 0, 0] = False
    w = speed_bin_weights(flow, keep)
    assert w[0, 0, 0] == 0
    assert w[keep].mean().item() == pytest.approx(1.0)
    slow_total = w[0, :8].sum().item()
    fast_total = w[0, 8:].sum().item()
    assert slow_total == pytest.approx(fast_total)
    wn = speed_bin_weights(flow[0].permute(1, 2, 0).numpy(), keep[0].numpy())
    assert isinstance(wn, np.ndarray) and np.allclose(wn, w[0].numpy())
    assert not speed_bin_weights(flow, torch.zeros_like(keep)).any()
