"""Losses (sequence loss masked per sample, photometric, smoothness, cycle) and speed-bin weights."""

import math

import numpy as np
import pytest
import torch

from motionrefine.flow.losses import (SelfSupWeights, census_loss, census_transform, charbonnier, cycle_loss,
                                     cycle_objective, edge_weights, masked_mean_per_sample, occlusion_masks,
                                     photometric_loss, photometric_objective, sequence_loss, sequence_weights,
                                     smoothness_loss, soft_hamming)
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
    ramp = torch.arange(16.0).expand(2, 2, 16, 16).clone()
    flat = torch.full_like(img, 128.0)
    for order in (1, 2):
        assert smoothness_loss(const, img, order=order).item() == 0.0
    # First order: |∂x| = 1 on both channels, ∂y = 0, no edges: (1 + 0) / 2.
    assert smoothness_loss(ramp, flat, order=1).item() == pytest.approx(0.5, abs=1e-3)
    # Second order: a linear flow costs nothing, a quadratic one does.
    assert smoothness_loss(ramp, flat, order=2).item() == pytest.approx(0.0, abs=1e-6)
    quad = ramp ** 2 / 2  # ∂²x = 1
    assert smoothness_loss(quad, flat, order=2).item() == pytest.approx(0.5, abs=1e-3)
    # Level 2: the flow at 1/4 resolution in that level's pixels: a ramp of slope 1 stays slope 1.
    assert smoothness_loss(ramp, flat, order=1, level=2).item() == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError):
        smoothness_loss(ramp, flat, order=3)


@pytest.mark.parametrize("order", [1, 2])
def test_smoothness_weight_follows_a_step_edge_by_exp_minus_150_step(order):
    """A flow discontinuity on an image step edge of height s (on [0, 1]) costs exp(−150 s) of the
    same discontinuity in a flat region (UFlow's edge weight; second order: both ∂²F terms
    lie on stride-2 image differences that span the edge)."""
    h, w, s = 8, 32, 0.01
    img = torch.full((1, 3, h, w), 100.0)
    img[..., 16:] += 255.0 * s  # step edge between columns 15 and 16
    def jump_at(c):
        f = torch.zeros(1, 2, h, w)
        f[:, 0, :, c:] = 2.0
        return f
    on_edge = smoothness_loss(jump_at(16), img, order=order).item()
    off_edge = smoothness_loss(jump_at(6), img, order=order).item()
    assert on_edge / off_edge == pytest.approx(np.exp(-150 * s), rel=1e-4)
    # The weight itself: exp(−150 · mean_RGB |∂I|).
    grad = torch.zeros(1, 3, 1, 1)
    grad[0, 0] = 0.03  # one channel of three: mean 0.01
    assert edge_weights(grad, 150.0).item() == pytest.approx(np.exp(-1.5))


def random_texture(h, w, seed=0, lo=20.0, hi=200.0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.uniform(lo, hi, (1, 3, h, w)).astype(np.float32))


def test_census_of_a_constant_intensity_shift_is_zero_at_the_true_flow():
    """I2 = I1 translated by (3, −2) and brightened by a constant 30: census ignores the
    brightness, so its loss is 0 at the true flow and positive off it (also the transform
    itself is unchanged by the brightness, away from the zero-padded border)."""
    i1, i2, flow = shifted_pair(3, -2)
    i1, i2 = i1 * 0.7 + 10, i2 * 0.7 + 40  # 0–255 kept, +30 on the second frame
    assert census_transform(i2 + 0.0).shape == (1, 49, 24, 32)
    assert torch.allclose(census_transform(i1)[..., 3:-3, 3:-3], census_transform(i1 + 30.0)[..., 3:-3, 3:-3], atol=1e-4)
    # Pixels whose patch warps from inside the frame (the zero-padded outside is not the scene).
    interior = torch.zeros(1, 24, 32, dtype=torch.bool)
    interior[:, 6:-6, 6:-6] = True
    assert census_loss(i1, i2, flow, interior).item() < 1e-5
    assert photometric_loss(i1, i2, flow, interior).item() > 0.05  # a plain colour difference sees the brightening
    for off in ((1, 0), (0, 1), (-1, -1), (0.5, 0)):
        wrong = flow + torch.tensor(off, dtype=torch.float32)[None, :, None, None]
        assert census_loss(i1, i2, wrong, interior).item() > 0.1, off
    assert census_loss(i1, i2, torch.zeros_like(flow), interior).item() > 0.1
    # Unmasked, pointing out of the frame costs (it meets the zero padding) rather than escaping the loss.
    out = torch.full_like(flow, 100.0)
    assert census_loss(i1, i2, out).item() > census_loss(i1, i2, flow).item() + 0.1
    # Soft Hamming: 0 for equal transforms, grows with the difference, below 1 per channel.
    t = census_transform(i1)
    assert soft_hamming(t, t).abs().max().item() == 0.0
    assert 0 < soft_hamming(t, -t).max().item() < 49


def test_cycle_baseline_is_minimised_by_the_true_flow_not_by_zero_flow():
    """On an occlusion-free translated pair (I2 = I1 shifted by (2, 1); pixels whose target leaves
    the frame are masked), the cycle objective of the true forward/backward flows is 0 and
    below that of zero flow and of mutually consistent wrong flows, which the cycle term alone
    (also 0 for them) could not tell apart."""
    u, v = 2, 1
    i1, i2, _ = shifted_pair(u, v, h=32, w=40, seed=3)
    # Occlusion-free: every scored pixel's patch lies in both frames under any flow tried here.
    inner = torch.zeros(1, 32, 40, dtype=torch.bool)
    inner[:, 10:-10, 10:-10] = True
    def objective(fu, fv):
        ff = torch.zeros(1, 2, 32, 40)
        ff[:, 0], ff[:, 1] = fu, fv
        fb = -ff
        vis_f, vis_b = occlusion_masks(ff, fb)
        return (cycle_objective(i1, i2, ff, fb, vis_f & inner, vis_b & inner).item(),
                cycle_loss(ff, fb, inner).item())
    true, true_cyc = objective(u, v)
    assert true < 1e-5 and true_cyc < 1e-6
    zero, zero_cyc = objective(0, 0)
    assert zero_cyc < 1e-6 and zero > 0.1  # the cycle term alone prefers zero flow as much as the truth
    for fu, fv in ((u + 1, v), (u, v - 1), (u - 0.5, v + 0.5), (-u, -v), (u + 3, v + 2)):
        assert objective(fu, fv)[0] > true + 0.05, (fu, fv)
    # An inconsistent backward flow is penalised by the cycle term on top of the census anchor.
    ff = torch.zeros(1, 2, 32, 40)
    ff[:, 0], ff[:, 1] = u, v
    fb = -ff + 0.4
    w = SelfSupWeights()
    assert cycle_objective(i1, i2, ff, fb, inner, inner, w).item() > \
        cycle_objective(i1, i2, ff, fb, inner, inner, w._replace(cycle=0.0)).item() + 0.05


def test_photometric_baseline_prefers_the_true_flow():
    i1, i2, flow = shifted_pair(3, -2)
    vis = torch.zeros(1, 24, 32, dtype=torch.bool)
    vis[:, 6:-6, 6:-6] = True
    true = photometric_objective(i1, i2, flow, -flow, vis, vis).item()
    assert true < 1e-5
    assert photometric_objective(i1, i2, flow * 0, flow * 0, vis, vis).item() > true + 0.1
    # Occluded (masked) pixels do not count: masking everything leaves only the smoothness term.
    none = torch.zeros_like(vis)
    assert photometric_objective(i1, i2, flow * 0, flow * 0, none, none).item() == 0.0


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
