"""RAFT: the official checkpoint reproduces its published accuracy; layouts and loaders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from motionrefine.core.errors import AssetMissingError, CheckpointError
from motionrefine.flow.inference import FlowEstimator
from motionrefine.models.checkpoint import load_raft, save_raft
from motionrefine.models.raft import RAFT, InputPadder
from motionrefine.models.raft.corr import AlternateCorrBlock, CorrBlock

SHARED = Path(__file__).resolve().parents[2] / "shared"
RAFT_SMALL = SHARED / "weights" / "raft-small.pth"
RAFT_SMALL_SHA = "c7d41b9cc88442bb8aa911dbb33086dac55a226394b142937ff22d5578717332"
MOTO = SHARED / "data" / "stereo" / "motorcycle"


@pytest.fixture(scope="module")
def raft_small():
    model, digest = load_raft(RAFT_SMALL, "small", expected_sha256=RAFT_SMALL_SHA)
    return model


def _rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1].copy()


@pytest.mark.parametrize("mode,epe_ref,outlier_ref", [("even", 1.868, 10.4), ("bottom_right", 1.934, 11.6)])
def test_motorcycle_matches_official_figures(raft_small, mode, epe_ref, outlier_ref):
    """Full-resolution 741x500 Middlebury Motorcycle, 12 iterations, GT flow = (-d, 0)."""
    torch.set_num_threads(2)
    left, right = _rgb(MOTO / "motorcycle_left.png"), _rgb(MOTO / "motorcycle_right.png")
    disp = np.load(MOTO / "motorcycle_disp.npz")["arr_0"]
    assert left.shape == (500, 741, 3)
    flow = FlowEstimator(raft_small, iters=12, padding=mode).flow(left, right)
    valid = np.isfinite(disp)
    gt = np.stack([-np.where(valid, disp, 0), np.zeros_like(disp)], axis=-1)
    err = np.linalg.norm(flow - gt, axis=-1)[valid]
    assert abs(err.mean() - epe_ref) <= 0.02, err.mean()
    assert abs(100 * (err > 3).mean() - outlier_ref) <= 0.3, 100 * (err > 3).mean()


def _published_large_layout() -> dict[str, tuple]:
    """raft-things.pth key -> shape, written out from the published RAFT architecture
    (BasicEncoder 64-64-96-128, instance-norm fnet -> 256, batch-norm cnet -> 128+128,
    4-level radius-4 correlation (324 planes), SepConvGRU 128, convex-upsampling mask)."""
    out: dict[str, tuple] = {}

    def conv(name, cout, cin, kh, kw=None):
        out[f"{name}.weight"] = (cout, cin, kh, kw or kh)
        out[f"{name}.bias"] = (cout,)

    def bn(name, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            out[f"{name}.{p}"] = (c,)
        out[f"{name}.num_batches_tracked"] = ()

    for enc, dim, batch in (("fnet", 256, False), ("cnet", 256, True)):
        conv(f"{enc}.conv1", 64, 3, 7)
        if batch:
            bn(f"{enc}.norm1", 64)
        cin = 64
        for layer, (planes, stride) in enumerate(((64, 1), (96, 2), (128, 2)), start=1):
            for blk in range(2):
                p = f"{enc}.layer{layer}.{blk}"
                conv(f"{p}.conv1", planes, cin if blk == 0 else planes, 3)
                conv(f"{p}.conv2", planes, planes, 3)
                if batch:
                    bn(f"{p}.norm1", planes)
                    bn(f"{p}.norm2", planes)
                if blk == 0 and stride != 1:
                    conv(f"{p}.downsample.0", planes, cin, 1)
                    if batch:
                        bn(f"{p}.norm3", planes)
                        bn(f"{p}.downsample.1", planes)
            cin = planes
        conv(f"{enc}.conv2", dim, 128, 1)
    u = "update_block"
    conv(f"{u}.encoder.convc1", 256, 324, 1)
    conv(f"{u}.encoder.convc2", 192, 256, 3)
    conv(f"{u}.encoder.convf1", 128, 2, 7)
    conv(f"{u}.encoder.convf2", 64, 128, 3)
    conv(f"{u}.encoder.conv", 126, 256, 3)
    for g in ("z", "r", "q"):
        conv(f"{u}.gru.conv{g}1", 128, 384, 1, 5)
        conv(f"{u}.gru.conv{g}2", 128, 384, 5, 1)
    conv(f"{u}.flow_head.conv1", 256, 128, 3)
    conv(f"{u}.flow_head.conv2", 2, 256, 3)
    conv(f"{u}.mask.0", 256, 128, 3)
    conv(f"{u}.mask.2", 576, 256, 1)
    return out


def test_large_variant_matches_published_layout():
    model = RAFT("large")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == _published_large_layout()
    # RAFT's published parameter count for the C+T model.
    assert sum(p.numel() for p in model.parameters()) == 5257536


def test_large_variant_loads_official_layout_with_module_prefix(tmp_path):
    model = RAFT("large")
    path = tmp_path / "raft-things-like.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    loaded, _ = load_raft(path, "large")
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.inference_mode():
        a = model.eval()(x, x.flip(-1), iters=2, test_mode=True)[1]
        b = loaded(x, x.flip(-1), iters=2, test_mode=True)[1]
    assert torch.allclose(a, b)


def test_alternate_corr_equals_all_pairs():
    torch.manual_seed(0)
    f1, f2 = torch.randn(2, 1, 32, 12, 20).unbind(0)
    coords = torch.rand(1, 2, 12, 20) * torch.tensor([19.0, 11.0]).view(1, 2, 1, 1) + torch.randn(1, 2, 12, 20)
    a = CorrBlock(f1, f2, 4, 3)(coords)
    b = AlternateCorrBlock(f1, f2, 4, 3, chunk=37)(coords)
    assert a.shape == b.shape == (1, 4 * 49, 12, 20)
    assert torch.allclose(a, b, atol=1e-4)


def test_corr_pyramid_is_the_pooled_all_pairs_volume():
    """Each level equals the full volume average-pooled over fmap2's pixels (odd sizes floor)."""
    torch.manual_seed(1)
    f1, f2 = torch.randn(2, 2, 16, 13, 23).unbind(0)
    volume = torch.einsum("bchw,bcyx->bhwyx", f1, f2).reshape(2 * 13 * 23, 1, 13, 23) / 16 ** 0.5
    pyramid = CorrBlock(f1, f2, 4, 3).pyramid
    for level, corr in enumerate(pyramid):
        expected = volume if level == 0 else torch.nn.functional.avg_pool2d(expected, 2, stride=2)
        assert corr.shape == expected.shape
        assert torch.allclose(corr, expected, atol=1e-5)
    assert pyramid[-1].shape[-2:] == (1, 2)


def test_feature_reuse_equals_independent_pairs(raft_small):
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8), (0, 0), 2)
    frames = np.stack([np.roll(base, s, axis=1) for s in (0, 2, 5)])
    est = FlowEstimator(raft_small, iters=4)
    fw, bw = est.pairs(frames)
    for t in range(2):
        np.testing.assert_allclose(fw[t], est.flow(frames[t], frames[t + 1]), atol=1e-3)
        np.testing.assert_allclose(bw[t], est.flow(frames[t + 1], frames[t]), atol=1e-3)


def test_padder_round_trip():
    x = torch.arange(2 * 3 * 13 * 21, dtype=torch.float32).view(2, 3, 13, 21)
    for mode in ("even", "bottom_right"):
        p = InputPadder(x.shape, mode)
        y = p.pad_images(x)
        assert y.shape[-2:] == (16, 24)
        assert torch.equal(p.unpad(y), x)


def test_missing_checkpoint_names_path_and_source(tmp_path):
    with pytest.raises(AssetMissingError, match=r"nope\.pth.*princeton-vl/RAFT"):
        load_raft(tmp_path / "nope.pth")


def test_checkpoint_with_wrong_keys(tmp_path):
    path = tmp_path / "large-as-small.pth"
    torch.save({f"module.{k}": v for k, v in RAFT("large").state_dict().items()}, path)
    with pytest.raises(CheckpointError, match="does not fit RAFT.*(missing|unexpected|shape)"):
        load_raft(path, "small")


def test_checkpoint_sha_pin_and_corrupt_file(tmp_path):
    with pytest.raises(CheckpointError, match="sha256"):
        load_raft(RAFT_SMALL, "small", expected_sha256="0" * 64)
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(RAFT_SMALL.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        load_raft(bad)


def test_saved_checkpoint_reloads_in_official_layout(raft_small, tmp_path):
    out = tmp_path / "refined.pth"
    save_raft(raft_small, out)
    state = torch.load(out, weights_only=True)
    assert all(k.startswith("module.") for k in state)
    reloaded, _ = load_raft(out, "small")
    for (k, a), (_, b) in zip(raft_small.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), k
