"""Geometry: intrinsics, back-projection, projection and the depth-guided motion normalisation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from more4d.errors import InputError
from more4d.geometry import (
    DEFAULT_FOV_DEG,
    SEED_MOTION_ALPHAS,
    backproject_depth,
    denormalize_motion,
    fov_from_intrinsics,
    intrinsics_from_fov,
    motion_alphas,
    motion_to_video,
    normalize_motion,
    project_points,
    resize_intrinsics,
    valid_depth_mask,
    video_to_motion,
)


def _tracks(seed: int, T: int = 5, N: int = 64, batch: tuple[int, ...] = ()) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p0 = torch.randn(*batch, 1, N, 3, generator=g, dtype=torch.float64)
    p0[..., 2] = 1.0 + 4.0 * torch.rand(*batch, 1, N, generator=g, dtype=torch.float64)
    motion = 0.2 * torch.randn(*batch, T - 1, N, 3, generator=g, dtype=torch.float64).cumsum(-3)
    return torch.cat([p0, p0 + motion], dim=-3)


def test_intrinsics_round_trip():
    K = intrinsics_from_fov(DEFAULT_FOV_DEG, 256, 384)
    assert K[0, 0] == K[1, 1] and K[0, 2] == 192 and K[1, 2] == 128
    assert fov_from_intrinsics(K, 256) == pytest.approx(DEFAULT_FOV_DEG, abs=1e-4)


@pytest.mark.parametrize(("fov", "h", "w"), [(0.0, 8, 8), (180.0, 8, 8), (float("nan"), 8, 8), (50.0, 0, 8)])
def test_intrinsics_bad_input(fov, h, w):
    with pytest.raises(InputError):
        intrinsics_from_fov(fov, h, w)


def test_bad_K_is_rejected():
    K = intrinsics_from_fov(50.0, 16, 16)
    for bad in (K * torch.tensor([[0.0], [1.0], [1.0]]), K.new_full((3, 3), float("nan")), K[:2]):
        with pytest.raises(InputError):
            fov_from_intrinsics(bad, 16)


def test_resize_and_crop_intrinsics_keep_rays():
    K = intrinsics_from_fov(60.0, 100, 200)
    crop = (10, 40, 80, 120)  # top, left, h, w
    K2 = resize_intrinsics(K, (100, 200), (40, 60), crop=crop)
    # the pixel centre (u, v) of the source maps to the same ray after crop + resize
    u, v = 40 + 0.5 + 60.0, 10 + 0.5 + 20.0
    ray = torch.tensor([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]])
    u2, v2 = (u - crop[1]) * 60 / 120, (v - crop[0]) * 40 / 80
    ray2 = torch.tensor([(u2 - K2[0, 2]) / K2[0, 0], (v2 - K2[1, 2]) / K2[1, 1]])
    torch.testing.assert_close(ray, ray2)
    with pytest.raises(InputError, match="crop"):
        resize_intrinsics(K, (100, 200), (40, 60), crop=(90, 0, 20, 20))


def test_backproject_then_project_recovers_pixels():
    H, W = 6, 8
    K = intrinsics_from_fov(50.0, H, W)
    depth = 1.0 + torch.rand(H, W, generator=torch.Generator().manual_seed(0))
    pts = backproject_depth(depth, K)
    assert pts.shape == (H * W, 3)
    uv, z = project_points(pts, K)
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    torch.testing.assert_close(uv, torch.stack([u.reshape(-1), v.reshape(-1)], -1).float())
    torch.testing.assert_close(z, depth.reshape(-1))
    # batched K broadcasts over points
    uvb, _ = project_points(pts.expand(3, -1, -1), K.expand(3, 3, 3))
    torch.testing.assert_close(uvb, uv.expand(3, -1, -1))


def test_valid_depth_mask_masks_not_replaces():
    d = torch.tensor([1.0, 0.0, -1.0, float("nan"), float("inf"), 1e-5, 2.0])
    assert valid_depth_mask(d).tolist() == [True, False, False, False, False, False, True]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), ax=st.floats(0.3, 3.0), ay=st.floats(0.3, 3.0), scale=st.floats(1e-2, 1e3))
def test_normalisation_inverse_and_scale_invariance(seed, ax, ay, scale):
    points = _tracks(seed, batch=(2,))
    m, valid = normalize_motion(points, (ax, ay))
    assert valid.all() and m.shape == points.shape
    assert torch.count_nonzero(m[..., 0, :, :]) == 0  # frame 0 is exactly zero
    torch.testing.assert_close(denormalize_motion(m, points[..., 0, :, :], (ax, ay)), points, rtol=1e-9, atol=1e-9)
    m_scaled, _ = normalize_motion(points * scale, (ax, ay))
    torch.testing.assert_close(m_scaled, m, rtol=1e-9, atol=1e-9)


def test_normalisation_float32_round_trip():
    points = _tracks(3).float()
    m, _ = normalize_motion(points, SEED_MOTION_ALPHAS)
    torch.testing.assert_close(denormalize_motion(m, points[0], SEED_MOTION_ALPHAS), points, rtol=1e-5, atol=1e-5)


def test_normalisation_is_image_plane_motion():
    H, W = 24, 32
    K = intrinsics_from_fov(DEFAULT_FOV_DEG, H, W)
    alphas = motion_alphas(K, (H, W))
    assert alphas == pytest.approx((float(K[0, 0]) / W, float(K[1, 1]) / H))
    p0 = torch.tensor([[0.1, -0.2, 3.0]])
    p1 = p0 + torch.tensor([[0.03, 0.0, 0.0]])  # small x move at constant depth
    m, _ = normalize_motion(torch.stack([p0, p1]), alphas)
    du = (project_points(p1, K)[0] - project_points(p0, K)[0])[0, 0] / W
    assert float(m[1, 0, 0]) == pytest.approx(float(du), rel=1e-5)


def test_invalid_depth_is_masked():
    points = _tracks(1, N=6)
    points[0, 1, 2] = 0.0
    points[0, 2, 2] = float("nan")
    points[0, 3, 2] = -1.0
    points[2, 4, 0] = float("inf")
    m, valid = normalize_motion(points, (1.0, 1.0))
    assert valid.tolist() == [True, False, False, False, False, True]
    assert torch.isfinite(m).all() and torch.count_nonzero(m[:, ~valid]) == 0
    back = denormalize_motion(m, points[0], (1.0, 1.0))
    torch.testing.assert_close(back[:, valid], points[:, valid])
    assert torch.equal(back[:, 1], points[0, 1].expand(5, 3))  # invalid z0 stays at P0


def test_seed_compat_alphas():
    K = intrinsics_from_fov(50.0, 368, 512)
    assert motion_alphas(K, (368, 512), seed_compat=True) == SEED_MOTION_ALPHAS == pytest.approx((1.0435, 1.0), abs=1e-4)
    # the seed's normalize_track_z: (dx / (z0 / 1.0435), dy / (z0 / 1), dz / z0)
    points = _tracks(5)
    m, _ = normalize_motion(points, SEED_MOTION_ALPHAS)
    d, z0 = points - points[:1], points[:1, :, 2:]
    seed = torch.cat([d[..., :1] / (z0 / SEED_MOTION_ALPHAS[0]), d[..., 1:2] / (z0 / 1.0), d[..., 2:] / z0], dim=-1)
    torch.testing.assert_close(m, seed)
    with pytest.raises(InputError, match="alphas"):
        normalize_motion(_tracks(0), (0.0, 1.0))


def test_motion_video_round_trip_batched():
    m = torch.randn(2, 5, 6 * 4, 3)
    video = motion_to_video(m, 6, 4)
    assert video.shape == (2, 3, 5, 6, 4)
    assert torch.equal(video[1, :, 2, 3, 1], m[1, 2, 3 * 4 + 1])  # row-major pixels
    assert torch.equal(video_to_motion(video), m)
    with pytest.raises(InputError):
        motion_to_video(m, 5, 4)
    with pytest.raises(InputError):
        video_to_motion(torch.zeros(2, 5, 6, 4))
