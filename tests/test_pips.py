"""PIPs: shapes, the released checkpoint's parameter layout, agreement with the published data
flow, checkpoint loading, chained long-video tracking and the losses."""

from __future__ import annotations

import copy
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from motionrefine.core.errors import AssetMissingError, CheckpointError, MotionRefineError
from motionrefine.models.pips import (Pips, PipsConfig, balanced_bce, load_pips, reanchor_offset, save_pips,
                                      score_map_loss, sequence_loss, sincos_embed_3d, track_long)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return Pips("small").eval()


@pytest.fixture(scope="module")
def published():
    torch.manual_seed(0)
    return Pips("published").eval()


def _clip(b=1, s=8, h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, s, 3, h, w, generator=g) * 255


# --------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("size", ["small", "published"])
def test_forward_shapes(size, small, published):
    model = small if size == "small" else published
    cfg = model.cfg
    xy = torch.tensor([[[10.0, 20.0], [50.5, 30.25], [90.0, 60.0]]]).repeat(2, 1, 1)
    with torch.no_grad():
        out = model(xy, _clip(b=2), iters=3, return_feat=True, return_heatmaps=True)
    coords, vis, feat, heat = out  # unpacks like a tuple
    assert len(coords) == 3 and all(c.shape == (2, 8, 3, 2) for c in coords)
    assert vis.shape == (2, 8, 3)
    assert feat.shape == (2, 3, cfg.latent_dim)
    assert heat.shape == (2, 8, 3, 3, 64 // cfg.stride, 96 // cfg.stride)
    assert all(torch.isfinite(c).all() for c in coords)
    torch.testing.assert_close(coords[-1][:, 0], xy)  # frame 0 is locked to the query in eval mode
    plain = model(xy, _clip(b=2), iters=1)
    assert plain.feat is None and plain.heatmaps is None


def test_training_mode_frees_frame_zero_and_backpropagates(small):
    model = Pips("small").train()
    model.load_state_dict(small.state_dict())
    xy = torch.tensor([[[20.0, 20.0], [40.0, 30.0]]])
    out = model(xy, _clip(), iters=2, return_heatmaps=True)
    assert not torch.equal(out.coords[-1][:, 0], xy)
    target = xy[:, None].expand(1, 8, 2, 2)
    loss = sequence_loss(out.coords, target) + score_map_loss(out.heatmaps, target / model.stride)
    loss.backward()
    assert model.fnet.conv1.weight.grad is not None and model.delta_block.to_delta[0].weight.grad is not None


def test_coords_init_sets_the_start_and_the_anchor(small):
    init = torch.tensor([[[12.0, 20.0]]]).repeat(1, 8, 1)[:, :, None] + torch.arange(8.0).reshape(1, 8, 1, 1)
    with torch.no_grad():
        out = small(torch.tensor([[[0.0, 0.0]]]), _clip(), iters=1, coords_init=init, return_feat=True)
        ref = small(init[:, 0], _clip(), iters=1, return_feat=True)
    torch.testing.assert_close(out.coords[-1][:, 0], init[:, 0])
    torch.testing.assert_close(out.feat, ref.feat)  # query feature sampled at the initial frame-0 position


def test_window_length_is_checked(small):
    with pytest.raises(MotionRefineError):
        small(torch.zeros(1, 1, 2), _clip(s=7), iters=1)


# --------------------------------------------------------------------------- published layout

def published_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the released model-000200000.pth ('model_state_dict'), written out from the
    architecture: instance-norm encoder (no norm parameters) with stages 64/64/96/128/128 fused to
    2·128 then 128 channels; MLP-Mixer over S = 8 frames with width 512, depth 12, expansion 4,
    input 128 + 4·7² + 3·64 + 3 = 519, output 8·(128 + 2); GroupNorm(1, 128); two heads."""
    t: dict[str, tuple[int, ...]] = {}

    def conv(name, cout, cin, k):
        t[name + ".weight"] = (cout, cin, k, k)
        t[name + ".bias"] = (cout,)

    def linear(name, cout, cin):
        t[name + ".weight"] = (cout, cin)
        t[name + ".bias"] = (cout,)

    def affine(name, c):
        t[name + ".weight"] = (c,)
        t[name + ".bias"] = (c,)

    conv("fnet.conv1", 64, 3, 7)
    cin = 64
    for i, (planes, stride) in enumerate([(64, 1), (96, 2), (128, 2), (128, 2)], start=1):
        for j in (0, 1):
            p = f"fnet.layer{i}.{j}"
            conv(p + ".conv1", planes, cin if j == 0 else planes, 3)
            conv(p + ".conv2", planes, planes, 3)
            if j == 0 and stride != 1:
                conv(p + ".downsample.0", planes, cin, 1)
        cin = planes
    conv("fnet.conv2", 256, 64 + 96 + 128 + 128, 3)
    conv("fnet.conv3", 128, 256, 1)
    m = "delta_block.to_delta"
    linear(f"{m}.0", 512, 519)
    for d in range(1, 13):
        t[f"{m}.{d}.0.fn.0.weight"], t[f"{m}.{d}.0.fn.0.bias"] = (32, 8, 1), (32,)  # Conv1d over time
        t[f"{m}.{d}.0.fn.3.weight"], t[f"{m}.{d}.0.fn.3.bias"] = (8, 32, 1), (8,)
        affine(f"{m}.{d}.0.norm", 512)
        linear(f"{m}.{d}.1.fn.0", 2048, 512)
        linear(f"{m}.{d}.1.fn.3", 512, 2048)
        affine(f"{m}.{d}.1.norm", 512)
    affine(f"{m}.13", 512)
    linear(f"{m}.15", 8 * 130, 512)
    affine("norm", 128)
    linear("ffeat_updater.0", 128, 128)
    linear("vis_predictor.0", 1, 128)
    return t


def test_published_layout_matches_the_released_checkpoint_listing(published):
    expected = published_layout()
    own = {k: tuple(v.shape) for k, v in published.state_dict().items()}
    assert sorted(set(expected) - set(own)) == []
    assert sorted(set(own) - set(expected)) == []
    assert {k: own[k] for k in expected} == expected
    n = sum(math.prod(s) for s in expected.values())
    assert n == sum(p.numel() for p in published.parameters()) == 28_677_713
    # Adam keeps two moments per parameter: float32 params + state ≈ 328 MiB, the size the
    # released file is listed with.
    assert round(3 * 4 * n / 2 ** 20) == 328
    # spot checks against names that a converter for the real file asserts to exist
    for key in ("fnet.layer2.0.downsample.0.weight", "delta_block.to_delta.1.0.fn.0.weight",
                "delta_block.to_delta.12.1.norm.weight", "delta_block.to_delta.15.weight",
                "ffeat_updater.0.weight", "vis_predictor.0.weight", "norm.weight"):
        assert key in own
    assert published.stride == 4 and PipsConfig.size("small").stride == 8


# --------------------------------------------------------------------------- published data flow

def _reference_embedding(xyt, c=64):
    """Per axis: zeros, sin at even and cos at odd slots with frequencies k·1000/c, then raw xyt."""
    b, n, _ = xyt.shape
    div = (torch.arange(0, c, 2).to(xyt.dtype) * (1000.0 / c)).reshape(1, 1, c // 2)
    parts = []
    for a in range(3):
        pe = torch.zeros(b, n, c, dtype=xyt.dtype)
        pe[:, :, 0::2] = torch.sin(xyt[:, :, a:a + 1] * div)
        pe[:, :, 1::2] = torch.cos(xyt[:, :, a:a + 1] * div)
        parts.append(pe)
    return torch.cat(parts + [xyt], dim=2)


def _reference_sample(img, x, y):
    """Bilinear with clamped corner indices and unclamped weights (B, C, H, W), x/y (B, N) → (B, N, C)."""
    b, c, h, w = img.shape
    x0, y0 = x.floor(), y.floor()
    out = 0
    for dx in (0, 1):
        for dy in (0, 1):
            xi = (x0 + dx).clamp(0, w - 1).long()
            yi = (y0 + dy).clamp(0, h - 1).long()
            wt = (1 - (x - x0 - dx).abs()) * (1 - (y - y0 - dy).abs())
            vals = torch.stack([img[i, :, yi[i], xi[i]].T for i in range(b)])  # (B, N, C)
            out = out + wt[..., None] * vals
    return out


def _reference_forward(m, xys, rgbs, iters):
    """The published data flow in its own layout (B, S, N, C): full correlation maps per level,
    windows sampled from them with grid_sample, features updated through GroupNorm + MLP."""
    cfg = m.cfg
    b, s, _, h, w = rgbs.shape
    n, c, st, r = xys.shape[1], cfg.latent_dim, cfg.stride, cfg.corr_radius
    fm = m.fnet(2 * (rgbs.reshape(b * s, 3, h, w) / 255.0) - 1).reshape(b, s, c, h // st, w // st)
    pyr = [fm]
    for _ in range(cfg.corr_levels - 1):
        p = F.avg_pool2d(pyr[-1].reshape(b * s, c, *pyr[-1].shape[-2:]), 2, stride=2)
        pyr.append(p.reshape(b, s, c, *p.shape[-2:]))
    coords = (xys / st)[:, None].repeat(1, s, 1, 1)
    base = coords.clone()
    ffeats = _reference_sample(fm[:, 0], coords[:, 0, :, 0], coords[:, 0, :, 1])[:, None].repeat(1, s, 1, 1)
    d = torch.linspace(-r, r, 2 * r + 1, dtype=xys.dtype)
    delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1)  # added to (x, y) as is
    preds = []
    for _ in range(iters):
        fcorrs = []
        for lvl, f in enumerate(pyr):
            hh, ww = f.shape[-2:]
            corr = torch.matmul(ffeats, f.reshape(b, s, c, hh * ww)) / math.sqrt(c)  # (B, S, N, hw)
            pts = coords.reshape(b * s * n, 1, 1, 2) / 2 ** lvl + delta[None]
            grid = torch.stack([2 * pts[..., 0] / (ww - 1) - 1, 2 * pts[..., 1] / (hh - 1) - 1], dim=-1)
            smp = F.grid_sample(corr.reshape(b * s * n, 1, hh, ww), grid, align_corners=True)
            fcorrs.append(smp.reshape(b, s, n, -1))
        fcorrs = torch.cat(fcorrs, dim=-1).permute(0, 2, 1, 3).reshape(b * n, s, -1)
        flows = (coords - coords[:, :1]).permute(0, 2, 1, 3).reshape(b * n, s, 2)
        times = torch.linspace(0, s, s, dtype=xys.dtype).reshape(1, s, 1).repeat(b * n, 1, 1)
        emb = _reference_embedding(torch.cat([flows, times], dim=2), cfg.embed_dim)
        ff = ffeats.permute(0, 2, 1, 3).reshape(b * n, s, c)
        dl = m.delta_block.to_delta(torch.cat([ff, fcorrs, emb], dim=2)).reshape(b * n, s, c + 2)
        ff = m.ffeat_updater(m.norm(dl[:, :, 2:].reshape(b * n * s, c))) + ff.reshape(b * n * s, c)
        ffeats = ff.reshape(b, n, s, c).permute(0, 2, 1, 3)
        coords = coords + dl[:, :, :2].reshape(b, n, s, 2).permute(0, 2, 1, 3)
        coords[:, 0] = base[:, 0]
        preds.append(coords * st)
    vis = m.vis_predictor(ffeats.reshape(b * s * n, c)).reshape(b, s, n)
    return preds, vis


@pytest.mark.parametrize("size,h,w", [("small", 128, 136), ("published", 64, 72)])
def test_matches_the_published_data_flow(size, h, w, small, published):
    # float64, so that only a real difference in the computation shows (random weights amplify
    # float32 reassociation noise over the iterations)
    model = copy.deepcopy(small if size == "small" else published).double()
    # every pyramid level at least 2 px wide (a 1-px level divides by zero in the reference)
    rgbs = _clip(b=2, h=h, w=w, seed=3).double()
    # includes a query near the border and one outside the frame
    xys = torch.tensor([[[10.0, 20.0], [50.5, 30.25], [w - 4.0, h - 6.0]],
                        [[33.3, 44.4], [0.2, 1.7], [-3.0, 80.0]]], dtype=torch.float64)
    with torch.no_grad():
        ours = model(xys, rgbs, iters=3)
        ref_coords, ref_vis = _reference_forward(model, xys, rgbs, iters=3)
    for a, b in zip(ours.coords, ref_coords):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-9)
    torch.testing.assert_close(ours.vis, ref_vis, atol=1e-8, rtol=1e-9)


def test_embedding_matches_its_description():
    xyt = torch.randn(2, 5, 3) * 4
    torch.testing.assert_close(sincos_embed_3d(xyt, 64), _reference_embedding(xyt, 64))


# --------------------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip(small, tmp_path):
    digest = save_pips(small, tmp_path / "pips.pth")
    model, d2 = load_pips(tmp_path / "pips.pth", "small", expected_sha256=digest)
    assert d2 == digest and not model.training
    for k, v in small.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    # the file is in the released layout: the state sits under 'model_state_dict'
    raw = torch.load(tmp_path / "pips.pth", weights_only=True)
    assert set(raw) == {"model_state_dict"}
    xy = torch.tensor([[[20.0, 20.0]]])
    torch.testing.assert_close(model(xy, _clip(), iters=2).coords[-1], small(xy, _clip(), iters=2).coords[-1])


def test_released_layout_and_prefixes_load_strictly(published, tmp_path):
    state = published.state_dict()
    # as the PIPs training script writes it: optimizer state beside the model state
    torch.save({"optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
                "model_state_dict": state}, tmp_path / "model-000200000.pth")
    model, _ = load_pips(tmp_path / "model-000200000.pth", "published")
    assert torch.equal(model.delta_block.to_delta[15].weight, published.delta_block.to_delta[15].weight)
    assert model.stride == 4 and load_pips(tmp_path / "model-000200000.pth", stride=8)[0].stride == 8
    small = Pips("small").state_dict()
    for prefix in ("module.", "model."):
        torch.save({f"{prefix}{k}": v for k, v in small.items()}, tmp_path / "p.pth")
        load_pips(tmp_path / "p.pth", "small")


def test_wrong_checkpoints_raise_clear_errors(small, tmp_path):
    state = dict(small.state_dict())
    state["delta_block.to_delta.99.weight"] = state.pop("delta_block.to_delta.0.weight")
    torch.save({"model_state_dict": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"missing keys.*to_delta\.0\.weight.*unexpected keys.*to_delta\.99"):
        load_pips(tmp_path / "bad.pth", "small")
    save_pips(small, tmp_path / "small.pth")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_pips(tmp_path / "small.pth", "published")
    with pytest.raises(CheckpointError, match="sha256"):
        load_pips(tmp_path / "small.pth", "small", expected_sha256="0" * 64)
    with pytest.raises(AssetMissingError, match="aharley/pips"):
        load_pips(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="torch.load"):
        load_pips(tmp_path / "junk.pth")
    torch.save({"optimizer_state_dict": {}}, tmp_path / "noweights.pth")
    with pytest.raises(CheckpointError, match="no state_dict"):
        load_pips(tmp_path / "noweights.pth")


# --------------------------------------------------------------------------- long videos

def test_reanchor_offset_follows_the_chaining_demo():
    assert reanchor_offset(np.full(8, 0.99)) == 7
    assert reanchor_offset([1, 1, 1, 1, 1, 1, 0.95, 0.5]) == 6
    # frame 1 is never eligible; 0.85 passes once the threshold has dropped three times (0.84)
    assert reanchor_offset([1, 1, 0.1, 0.85, 0.1, 0.1, 0.1, 0.1]) == 3
    assert reanchor_offset([1, 1, 0.1, 0.87, 0.1, 0.1, 0.86, 0.1]) == 3
    assert reanchor_offset(np.zeros(8)) == 7  # the threshold eventually goes below zero


def _translating_texture(T=14, h=64, w=96, shift=3, seed=0):
    rng = np.random.default_rng(seed)
    big = rng.random((h, w + shift * T, 3)).astype(np.float32)
    big = cv2.GaussianBlur(big, (0, 0), 2.0)
    big = ((big - big.min()) / (big.max() - big.min()) * 255).astype(np.uint8)
    # content moves right by `shift` px per frame
    return np.stack([big[:, shift * (T - t):shift * (T - t) + w] for t in range(T)])


def test_track_long_on_translating_texture(small):
    frames = _translating_texture()
    assert np.array_equal(frames[1][:, 3:], frames[0][:, :-3])  # the known integer shift
    T = len(frames)
    queries = np.array([[0, 20.0, 30.0], [0, 40.5, 10.25], [5, 50.0, 40.0], [T - 1, 30.0, 30.0]])
    tracks, vis = track_long(small, frames, queries, S=8, iters=2)
    assert tracks.shape == (4, T, 2) and tracks.dtype == np.float32
    assert vis.shape == (4, T) and ((vis >= 0) & (vis <= 1)).all()
    assert np.isfinite(tracks).all()
    qt = queries[:, 0].astype(int)
    np.testing.assert_allclose(tracks[np.arange(4), qt], queries[:, 1:], atol=1e-4)
    with pytest.raises(MotionRefineError):
        track_long(small, frames, queries, S=6)
    with pytest.raises(MotionRefineError):
        track_long(small, frames, np.array([[T, 1.0, 1.0]]))


def test_track_long_first_window_equals_a_plain_forward(small):
    frames = _translating_texture(T=8)
    q = np.array([[0, 20.0, 30.0], [0, 60.0, 20.0]])
    tracks, vis = track_long(small, frames, q, iters=2)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)[None].float()
    with torch.no_grad():
        out = small(torch.from_numpy(q[None, :, 1:]).float(), x, iters=2)
    xy = out.coords[-1][0].transpose(0, 1).numpy()
    v = torch.sigmoid(out.vis[0]).T.numpy()
    for n in range(len(q)):
        # frames up to the re-anchor frame come from the first window; later ones from the next
        si = reanchor_offset(v[n])
        np.testing.assert_allclose(tracks[n, :si + 1], xy[n, :si + 1], atol=1e-4)
        np.testing.assert_allclose(vis[n, :si], v[n, :si], atol=1e-5)


# --------------------------------------------------------------------------- losses

def test_losses():
    target = torch.rand(1, 8, 4, 2) * 10
    assert sequence_loss([target, target], target) == 0
    preds = [target + 1.0, target + 0.5]
    # (0.8·1 + 1·0.5) / 2
    assert sequence_loss(preds, target).item() == pytest.approx(0.65)
    valid = torch.zeros(1, 8, 4)
    valid[:, :, 0] = 1
    assert sequence_loss(preds, target, valid).item() == pytest.approx(0.65)
    logits = torch.tensor([10.0, -10.0, 0.0, 0.0])
    gt = torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert balanced_bce(logits, gt).item() == pytest.approx((math.log1p(math.exp(-10)) + math.log(2)) / 2 * 2, rel=1e-4)
    heat = torch.full((1, 8, 2, 4, 6, 7), -20.0)
    tgt = torch.zeros(1, 8, 4, 2)
    tgt[..., 0], tgt[..., 1] = 3.2, 4.6  # rounds to x = 3, y = 5
    heat[..., 5, 3] = 20.0
    assert score_map_loss(heat, tgt).item() < 1e-6
    assert score_map_loss(torch.zeros_like(heat), tgt).item() == pytest.approx(2 * math.log(2), rel=1e-5)
