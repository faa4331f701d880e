"""Tests for more4d.render: the torch splat reference, its backends, and Scene4D rendering."""

from __future__ import annotations

import math

import pytest
import torch

from more4d.errors import InputError
from more4d.geometry import backproject_depth, intrinsics_from_fov
from more4d.render import gsplat_available, render_points, render_scene, render_video
from more4d.render.scene import surface_radius, trajectory_intrinsics
from more4d.render.splat import ALPHA_MAX

H, W = 24, 32
MODES = ("disk", "gaussian")


def plane(depth: float = 2.0, height: int = H, width: int = W, seed: int = 0):
    """A fronto-parallel plane with one point per pixel: points `(H*W, 3)`, colours `(H*W, 3)`, K."""
    K = intrinsics_from_fov(50.0, height, width)
    points = backproject_depth(torch.full((height, width), depth), K)
    colors = torch.rand(height * width, 3, generator=torch.Generator().manual_seed(seed))
    return points, colors, K


def translation(x: float = 0.0, y: float = 0.0, z: float = 0.0) -> torch.Tensor:
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([x, y, z])
    return c2w


def yaw(degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
    return c2w


@pytest.mark.parametrize("mode", MODES)
def test_plane_from_its_own_camera_has_no_holes(mode):
    points, colors, K = plane()
    out = render_points(points, colors, torch.eye(4), K, H, W, mode=mode)
    assert out.rgb.shape == (1, H, W, 3) and out.depth.shape == out.alpha.shape == out.hole_mask.shape == (1, H, W)
    assert not out.hole_mask.any()
    assert torch.allclose(out.depth, torch.full_like(out.depth, 2.0), atol=1e-5)
    if mode == "disk":  # exact: each point covers its own pixel only
        assert torch.equal(out.rgb[0].reshape(-1, 3), colors)
        assert torch.equal(out.alpha, torch.ones_like(out.alpha))
    else:  # gaussians blend neighbours at equal depth: compare on a smooth colour ramp
        ramp = torch.linspace(0, 1, H * W)[:, None].expand(-1, 3).contiguous()
        smooth = render_points(points, ramp, torch.eye(4), K, H, W, mode=mode)
        assert (smooth.rgb[0].reshape(-1, 3) - ramp).abs().max() < 0.05
        assert out.alpha.min() > 0.99


def test_translated_camera_leaves_holes_exactly_where_nothing_projects():
    points, colors, K = plane(depth=2.0)
    shift = 5  # pixels: moving the camera right by shift * z / f moves the image left by `shift` columns
    out = render_points(points, colors, translation(x=shift * 2.0 / float(K[0, 0])), K, H, W)
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[:, W - shift :] = True
    assert torch.equal(out.hole_mask[0], expected)
    assert torch.allclose(out.rgb[0, :, : W - shift], colors.reshape(H, W, 3)[:, shift:], atol=1e-6)
    assert torch.equal(out.rgb[0, :, W - shift :], torch.zeros(H, shift, 3))  # background
    assert torch.equal(out.depth[0, :, W - shift :], torch.zeros(H, shift))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("near_first", [True, False])
def test_near_point_wins_and_black_is_not_a_hole(mode, near_first):
    K = intrinsics_from_fov(50.0, H, W)
    row, col = 7, 19
    ray = torch.tensor([(col + 0.5 - K[0, 2]) / K[0, 0], (row + 0.5 - K[1, 2]) / K[1, 1], 1.0])  # a pixel centre
    near, far = ray * 1.0, ray * 3.0
    pts = torch.stack([near, far] if near_first else [far, near])
    cols = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]] if near_first else [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    out = render_points(pts, cols, torch.eye(4), K, H, W, mode=mode)
    assert not out.hole_mask[0, row, col]  # the black near point covers the pixel
    assert out.rgb[0, row, col].max() < (1e-6 if mode == "disk" else 0.01)
    assert abs(float(out.depth[0, row, col]) - 1.0) < 0.01


def test_gaussian_falls_off_and_disk_is_hard():
    K = torch.tensor([[30.0, 0.0, 10.5], [0.0, 30.0, 12.5], [0.0, 0.0, 1.0]])  # principal point: pixel (12, 10)
    z = 2.0
    centre = torch.tensor([[0.0, 0.0, z]])
    radius = torch.tensor(2.0 * z / float(K[0, 0]))  # 2 px
    disk = render_points(centre, torch.ones(1, 3), torch.eye(4), K, H, W, radius=radius, mode="disk")
    gauss = render_points(centre, torch.ones(1, 3), torch.eye(4), K, H, W, radius=radius, mode="gaussian")
    assert set(disk.alpha.unique().tolist()) == {0.0, 1.0}
    assert int(disk.alpha.sum()) == 13  # pixel centres within 2 px: 1 + 4 + 4 + 4
    assert abs(float(gauss.alpha[0, 12, 10]) - ALPHA_MAX) < 1e-6
    profile = gauss.alpha[0, 12, 10:16]
    assert (profile[1:] < profile[:-1]).all()  # decreasing away from the centre
    sigma = 2.0 / 1.5
    assert abs(float(profile[1]) - math.exp(-0.5 / sigma**2)) < 1e-3


@pytest.mark.parametrize("mode", MODES)
def test_batch_equals_per_frame_renders(mode):
    points, colors, K = plane()
    g = torch.Generator().manual_seed(1)
    pts = points[None] + 0.02 * torch.randn(3, *points.shape, generator=g)  # (B, N, 3)
    c2w = torch.stack([torch.eye(4), yaw(4.0), translation(0.05, -0.03, 0.1)])
    Ks = torch.stack([K, K * torch.tensor([[1.1], [1.1], [1.0]]), K])
    out = render_points(pts, colors, c2w, Ks, H, W, mode=mode)
    assert out.rgb.shape == (3, H, W, 3)
    for b in range(3):
        single = render_points(pts[b], colors, c2w[b], Ks[b], H, W, mode=mode)
        for field in ("rgb", "depth", "alpha", "hole_mask"):
            assert torch.allclose(getattr(out, field)[b].float(), getattr(single, field)[0].float(), atol=1e-6)
    shared = render_points(points, colors, c2w, K, H, W, mode=mode)  # unbatched points broadcast
    assert torch.allclose(shared.rgb[1], render_points(points, colors, c2w[1], K, H, W, mode=mode).rgb[0])


@pytest.mark.parametrize("mode", MODES)
def test_gradients_flow_to_colors(mode):
    points, colors, K = plane()
    colors = colors.clone().requires_grad_(True)
    out = render_points(points, colors, yaw(3.0), K, H, W, mode=mode)
    out.rgb.sum().backward()
    assert colors.grad is not None and torch.isfinite(colors.grad).all() and colors.grad.abs().sum() > 0


def test_points_behind_camera_or_non_finite_are_ignored():
    points, colors, K = plane()
    behind = points * torch.tensor([1.0, 1.0, -1.0])
    out = render_points(behind, colors, torch.eye(4), K, H, W, background=(0.2, 0.4, 0.6))
    assert out.hole_mask.all() and torch.equal(out.depth, torch.zeros(1, H, W))
    assert torch.allclose(out.rgb, torch.tensor([0.2, 0.4, 0.6]).expand(1, H, W, 3))
    bad = points.clone()
    bad[:10, 0] = float("nan")
    bad[10:20, 2] = float("inf")
    out = render_points(bad, colors, torch.eye(4), K, H, W)
    assert out.hole_mask[0].reshape(-1)[:20].all() and not out.hole_mask[0].reshape(-1)[20:].any()


def test_radius_and_opacity():
    points, colors, K = plane(depth=2.0)
    sparse = points[::7]
    small = render_points(sparse, colors[::7], torch.eye(4), K, H, W)
    big = render_points(sparse, colors[::7], torch.eye(4), K, H, W, radius=4.0 * 2.0 / float(K[0, 0]))
    assert small.hole_mask.sum() > big.hole_mask.sum()
    half = render_points(points, colors, torch.eye(4), K, H, W, opacity=0.5, background=(1.0, 1.0, 1.0))
    assert torch.allclose(half.alpha, torch.full((1, H, W), 0.5))
    assert torch.allclose(half.rgb[0].reshape(-1, 3), 0.5 * colors + 0.5)
    assert not half.hole_mask.any()


def test_bad_input_raises_input_error():
    points, colors, K = plane()
    eye = torch.eye(4)
    cases = [
        dict(points=points[:, :2]),
        dict(points=points[:0], colors=colors[:0]),
        dict(colors=colors[:-1]),
        dict(c2w=torch.eye(3)),
        dict(K=K * torch.tensor([[0.0], [1.0], [1.0]])),
        dict(c2w=eye * 2.0),
        dict(c2w=torch.stack([eye, eye]), K=torch.stack([K, K, K])),
        dict(height=0),
        dict(width=2.5),
        dict(mode="cube"),
        dict(backend="optix"),
        dict(radius=-1.0),
        dict(opacity=1.5),
        dict(colors=colors * float("nan")),
        dict(background=(0.0, 1.0)),
    ]
    for case in cases:
        kw = dict(points=points, colors=colors, c2w=eye, K=K, height=H, width=W) | case
        with pytest.raises(InputError):
            render_points(kw.pop("points"), kw.pop("colors"), kw.pop("c2w"), kw.pop("K"), kw.pop("height"),
                          kw.pop("width"), **kw)
    with pytest.raises(InputError, match="gaussian"):
        render_points(points, colors, eye, K, H, W, mode="disk", backend="gsplat")
    if not gsplat_available("cpu"):
        with pytest.raises(InputError, match="CUDA"):
            render_points(points, colors, eye, K, H, W, mode="gaussian", backend="gsplat")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", MODES)
def test_cuda_torch_path_matches_cpu(mode):
    points, colors, K = plane()
    cpu = render_points(points, colors, yaw(5.0), K, H, W, mode=mode, backend="torch")
    gpu = render_points(points.cuda(), colors.cuda(), yaw(5.0).cuda(), K.cuda(), H, W, mode=mode, backend="torch")
    # float rounding may flip a near-tie between two splats of the same surface: compare means
    assert (cpu.rgb - gpu.rgb.cpu()).abs().mean() < 1e-3
    assert (cpu.hole_mask != gpu.hole_mask.cpu()).float().mean() < 5e-3


@pytest.mark.skipif(not gsplat_available("cuda"), reason="needs CUDA and gsplat")
def test_gsplat_matches_torch_reference():
    """Same projection and alpha rules; gsplat draws every pixel with alpha >= 1/255 where the reference stops at a
    square window of round(3 sigma) pixels (more4d.render.backends), so rgb and alpha agree to a mean absolute error
    below 1e-2 on a dense bumpy scene and a sparse random one, each rendered as a batch of two cameras with points
    behind the cameras and a non-finite one (which neither backend draws)."""
    g = torch.Generator().manual_seed(0)
    points, colors, K = plane(depth=2.0, height=64, width=64)
    points = points + 0.01 * torch.randn(points.shape, generator=g)
    sparse = torch.rand(300, 3, generator=g) * torch.tensor([2.0, 2.0, 2.0]) + torch.tensor([-1.0, -1.0, 2.0])
    sparse[:10, 2] = -1.0  # behind both cameras
    sparse[10] = float("nan")
    c2w = torch.stack([yaw(3.0), yaw(-3.0)]).cuda()
    for pts, cols, radius in ((points, colors, None), (sparse, torch.rand(300, 3, generator=g), 0.05)):
        kw = dict(radius=radius, opacity=0.8, mode="gaussian")
        args = (pts.cuda(), cols.cuda(), c2w, K.cuda(), 64, 64)
        ref = render_points(*args, backend="torch", **kw)
        fast = render_points(*args, backend="gsplat", **kw)
        assert fast.rgb.shape == ref.rgb.shape == (2, 64, 64, 3) and fast.alpha.shape == (2, 64, 64)
        assert (ref.rgb - fast.rgb).abs().mean() < 1e-2 and (ref.alpha - fast.alpha).abs().mean() < 1e-2
        assert (ref.hole_mask != fast.hole_mask).float().mean() < 1e-2
        both = ~ref.hole_mask & ~fast.hole_mask
        assert (ref.depth - fast.depth)[both].abs().mean() < 1e-2  # metres, at a depth of ~2


# ---------------------------------------------------------------------------------------------------------
# Scene4D rendering


def tiny_scene(num_frames: int = 3):
    from more4d.scene import Scene4D

    points, colors, K = plane(depth=2.0, height=16, width=20)
    drift = torch.linspace(0, 0.1, num_frames)[:, None, None] * torch.tensor([1.0, 0.0, 0.0])
    visibility = torch.ones(num_frames, 16 * 20, dtype=torch.bool)
    visibility[1, :40] = False  # the first two rows vanish at t = 1
    return Scene4D(points=points[None] + drift, colors=colors, visibility=visibility, K=K, image_size=(16, 20))


def static_trajectory(num_frames: int, fov_deg: float):
    from more4d.camera import CameraTrajectory

    return CameraTrajectory(c2w=torch.eye(4).repeat(num_frames, 1, 1), fov_deg=torch.full((num_frames,), fov_deg),
                            times=torch.arange(num_frames) / 8.0)


def test_render_scene_frame_t_uses_points_t_and_hides_invisible_tracks():
    scene = tiny_scene()
    out = render_scene(scene, static_trajectory(3, 50.0), batch_size=2)
    assert out.rgb.shape == (3, 16, 20, 3)
    assert not out.hole_mask[0].any()
    assert torch.equal(out.rgb[0].reshape(-1, 3), scene.colors)
    assert out.hole_mask[1, :2].all() and not out.hole_mask[1, 2:, :18].any()
    radius, drawn = surface_radius(scene.points[2:], scene.points[0], (16, 20), torch.eye(4)[None], scene.K[None])
    assert drawn.all()
    expected = render_points(scene.points[2], scene.colors, torch.eye(4), scene.K, 16, 20, radius=radius[0])
    assert torch.equal(out.rgb[2], expected.rgb[0])
    double = render_scene(scene, static_trajectory(3, 50.0), height=32, width=40, mode="gaussian")
    assert double.rgb.shape == (3, 32, 40, 3) and not double.hole_mask[0].any()


def test_render_scene_rejects_mismatched_trajectory():
    with pytest.raises(InputError, match="sample the camera path to 3 frames"):
        render_scene(tiny_scene(), static_trajectory(5, 50.0))


def test_render_video_writes_render_and_mask(tmp_path):
    from more4d.io import read_video

    video, mask = render_video(tiny_scene(), static_trajectory(3, 50.0), tmp_path / "out")
    frames, fps = read_video(video)
    masks, _ = read_video(mask)
    assert frames.shape == (3, 16, 20, 3) and masks.shape == (3, 16, 20, 3) and fps == 8.0
    assert masks[1, :2].min() > 200 and masks[0].max() < 50  # white = hole
    with pytest.raises(InputError):
        render_video(tiny_scene(), static_trajectory(3, 50.0), tmp_path / "missing" / "out")


def scene_of(points, colors, K, height, width):
    from more4d.scene import Scene4D

    T = points.shape[0]
    return Scene4D(points=points, colors=colors, visibility=torch.ones(T, height * width, dtype=torch.bool), K=K,
                   image_size=(height, width))


def test_receding_and_slanted_surfaces_stay_closed():
    """Points moving 30% away, or seen at 40 degrees, would part with a fixed world radius; the surface radius
    follows the neighbours' screen spacing, so the surface renders without holes."""
    points, colors, K = plane(depth=2.0)
    receding = torch.stack([points, points * 1.3])  # the whole plane moves away along the rays
    out = render_scene(scene_of(receding, colors, K, H, W), static_trajectory(2, 50.0))
    assert not out.hole_mask.any()
    traj = static_trajectory(1, 50.0)
    traj.c2w[0] = translation(x=0.7) @ yaw(-20.0)  # orbit-like view of the plane's centre
    out = render_scene(scene_of(points[None], colors, K, H, W), traj)
    inside = out.hole_mask[0, 6:-6, 10:-10]
    assert inside.float().mean() == 0, "gaps inside the slanted plane"


def test_depth_discontinuity_becomes_a_hole_not_a_curtain():
    """A near square in front of a far wall, seen from the side: the wall behind the square's edge is a hole;
    no point sits in between (the edge's neighbours are not stretched across)."""
    K = intrinsics_from_fov(50.0, H, W)
    depth = torch.full((H, W), 4.0)
    depth[8:16, 12:20] = 2.0
    points = backproject_depth(depth, K)[None]
    colors = torch.zeros(H * W, 3)
    colors[(depth < 3).reshape(-1)] = torch.tensor([1.0, 0.0, 0.0])
    traj = static_trajectory(1, 50.0)
    traj.c2w[0] = translation(x=0.4)
    out = render_scene(scene_of(points, colors, K, H, W), traj)
    hole = out.hole_mask[0]
    assert hole.any() and hole.float().mean() < 0.2  # the disocclusion beside the square and the new border
    radius, drawn = surface_radius(points, points[0], (H, W), traj.c2w, trajectory_intrinsics(
        scene_of(points, colors, K, H, W), traj, H, W))
    edge = torch.zeros(H, W, dtype=torch.bool)
    edge[8:16, 12] = edge[8:16, 19] = True  # the square's left and right columns border the wall
    assert not drawn[0][edge.reshape(-1)].all()  # the side the camera opens up is not drawn
    assert radius[0][drawn[0]].max() < 4 * radius[0][drawn[0]].min()  # nothing stretched across the gap


def test_path_starting_at_the_input_camera_reproduces_an_off_centre_crop():
    """A crop moves the principal point and changes the pixel aspect; frame 0 still shows the input exactly."""
    from more4d.geometry import resize_intrinsics

    K = resize_intrinsics(intrinsics_from_fov(50.0, 30, 45), (30, 45), (H, W), crop=(1, 3, 27, 40))
    points = backproject_depth(torch.full((H, W), 3.0), K)[None]
    colors = torch.rand(H * W, 3, generator=torch.Generator().manual_seed(1))
    scene = scene_of(points, colors, K, H, W)
    from more4d.geometry import fov_from_intrinsics

    out = render_scene(scene, static_trajectory(1, fov_from_intrinsics(K, H)))
    assert not out.hole_mask.any() and torch.equal(out.rgb[0].reshape(-1, 3), colors)
