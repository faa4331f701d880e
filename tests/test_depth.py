"""Depth estimators: the tiny UNet, "use this depth map", and the UniDepth adapter (with a stand-in package)."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from more4d.depth import (
    DepthEstimator,
    GivenDepth,
    TinyDepthEstimator,
    TinyDepthNet,
    UniDepthEstimator,
    load_depth,
    unidepth_available,
)
from more4d.depth.edges import sharpen_depth_edges
from more4d.depth.tiny import IMAGENET_MEAN, IMAGENET_STD
from more4d.errors import InputError
from more4d.geometry import DEFAULT_FOV_DEG, fov_from_intrinsics


@pytest.fixture(scope="module")
def net() -> TinyDepthNet:
    torch.manual_seed(0)
    return TinyDepthNet(block_channels=(8, 16, 32), sample_size=32).eval()


def test_tiny_net_shapes_batch_and_size(net):
    x = torch.rand(3, 3, 32, 48)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (3, 1, 32, 48)
    assert torch.isfinite(out).all()
    with torch.no_grad():  # batch elements are independent
        torch.testing.assert_close(net(x[1:2]), out[1:2], rtol=1e-4, atol=1e-5)
    default = TinyDepthNet()
    assert 0.5e6 < sum(p.numel() for p in default.parameters()) < 2e6


def test_tiny_net_save_load_roundtrip(net, tmp_path):
    net.save_pretrained(tmp_path / "depth")
    loaded = TinyDepthNet.from_pretrained(tmp_path / "depth").eval()
    x = torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


@pytest.mark.parametrize("hw", [(40, 72), (33, 17)])
def test_tiny_estimator_returns_depth_and_default_fov_K(net, hw):
    est = TinyDepthEstimator.from_net(net)
    assert isinstance(est, DepthEstimator)
    pred = est(torch.rand(*hw, 3))
    assert pred.depth.shape == hw and pred.depth.dtype == torch.float32
    assert (pred.depth > 0).all() and torch.isfinite(pred.depth).all()
    assert pred.K.shape == (3, 3)
    assert fov_from_intrinsics(pred.K, hw[0]) == pytest.approx(DEFAULT_FOV_DEG, abs=1e-4)
    h, w = net.working_size(*hw)
    assert h % net.multiple == 0 and w % net.multiple == 0


def test_flip_averaged_depth_is_mirror_symmetric_and_the_estimators_default(net):
    x = torch.rand(2, 3, 40, 72)
    with torch.no_grad():
        plain, mirrored = net.predict(x), net.predict(x.flip(-1)).flip(-1)
        assert not torch.allclose(plain, mirrored, atol=1e-3)  # a net alone is not mirror symmetric
        averaged = net.predict(x, flip=True)
        torch.testing.assert_close(averaged, (plain + mirrored) / 2)
        torch.testing.assert_close(net.predict(x.flip(-1), flip=True).flip(-1), averaged)
        est = TinyDepthEstimator.from_net(net, edge_median_radius=0)
        assert est.config.test_time_flip and TinyDepthEstimator.from_net(net).config.edge_median_radius == 3
        torch.testing.assert_close(est(x[0].permute(1, 2, 0)).depth.log(), averaged[0], rtol=1e-4, atol=1e-4)


def test_sharpened_depth_steps_at_the_colour_edge_and_keeps_slopes():
    H, W, edge = 24, 40, 20
    image = torch.zeros(H, W, 3)
    image[:, :edge] = torch.tensor([0.8, 0.3, 0.2])
    image[:, edge:] = torch.tensor([0.2, 0.4, 0.9])
    step = torch.where(torch.arange(W) < edge, 0.5, 1.5).float()
    ramp = F.conv1d(F.pad(step.view(1, 1, W), (1, 1), mode="replicate"), torch.full((1, 1, 3), 1 / 3)).view(W)
    log_depth = ramp.expand(H, W).clone()  # what a smooth net draws: a ramp across the outline
    out = sharpen_depth_edges(log_depth, image, radius=3)
    torch.testing.assert_close(out, step.expand(H, W), atol=0.01, rtol=0)
    slope = torch.linspace(0.0, 1.0, W).expand(H, W).contiguous()  # one colour, one slanted surface
    torch.testing.assert_close(sharpen_depth_edges(slope, torch.full((H, W, 3), 0.5), radius=3)[:, 3:-3],
                               slope[:, 3:-3], atol=0.01, rtol=0)


def test_given_depth_resizes_and_scales_K(tmp_path):
    depth = np.linspace(1.0, 5.0, 20 * 30, dtype=np.float32).reshape(20, 30)
    depth[0, 0] = np.nan
    np.save(tmp_path / "d.npy", depth)
    K = np.array([[30.0, 0, 15], [0, 30.0, 10], [0, 0, 1]])
    pred = GivenDepth(tmp_path / "d.npy", K=K)(torch.rand(40, 60, 3))
    assert pred.depth.shape == (40, 60)
    assert pred.depth[0, 0] == 0  # invalid stays invalid (nearest resize)
    torch.testing.assert_close(pred.K[0, 0], torch.tensor(60.0))
    torch.testing.assert_close(pred.K[1, 2], torch.tensor(20.0))
    assert GivenDepth(torch.from_numpy(depth))(torch.rand(20, 30, 3)).K is None


@pytest.mark.parametrize("bad", [np.zeros((8, 8)), np.full((8, 8), np.nan), np.ones((2, 3, 4)),
                                 np.array([["a", "b"], ["c", "d"]]), "missing.npy"])
def test_given_depth_bad_input(bad, tmp_path):
    if isinstance(bad, str):
        bad = tmp_path / bad
    with pytest.raises(InputError):
        load_depth(bad)


def test_given_depth_aspect_mismatch_and_bad_file(tmp_path):
    with pytest.raises(InputError, match="aspect"):
        GivenDepth(np.ones((10, 10)))(torch.rand(10, 30, 3))
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(InputError, match="readable"):
        load_depth(tmp_path / "junk.npy")


def test_unidepth_missing_weights_or_package(tmp_path):
    with pytest.raises(InputError, match="model.safetensors"):
        UniDepthEstimator(tmp_path)
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_text("{}")
    estimator = UniDepthEstimator(tmp_path)  # the package is needed only when depth is estimated
    assert not unidepth_available()
    with pytest.raises(InputError, match=r"`unidepth` package.*--depth"):
        estimator(torch.rand(8, 8, 3))


def test_unidepth_adapter_normalises_like_imagenet(tmp_path, monkeypatch):
    seen: list[torch.Tensor] = []
    _install_fake_unidepth(monkeypatch, seen)
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_text("{}")
    image = torch.rand(12, 20, 3)
    pred = UniDepthEstimator(tmp_path)(image)
    assert pred.depth.shape == (12, 20) and pred.K.shape == (3, 3)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], (image.permute(2, 0, 1)[None] - mean) / std)


def _install_fake_unidepth(monkeypatch, seen: list) -> None:
    """A stand-in `unidepth` package with UniDepthV2's `from_pretrained` / `infer(rgb, normalize)` API."""

    class FakeUniDepthV2(torch.nn.Module):
        @classmethod
        def from_pretrained(cls, path):
            return cls()

        def infer(self, rgb, normalize=True):
            assert normalize is False
            seen.append(rgb)
            b, _, h, w = rgb.shape
            return {"depth": torch.full((b, 1, h, w), 2.0), "intrinsics": torch.eye(3)[None].repeat(b, 1, 1)}

    pkg = types.ModuleType("unidepth")
    pkg.__spec__ = importlib.machinery.ModuleSpec("unidepth", None)
    models = types.ModuleType("unidepth.models")
    models.UniDepthV2 = FakeUniDepthV2
    monkeypatch.setitem(sys.modules, "unidepth", pkg)
    monkeypatch.setitem(sys.modules, "unidepth.models", models)

