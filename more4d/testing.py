"""Small synthetic scenes for tests, examples and benchmarks (no model, no files, deterministic by seed)."""

from __future__ import annotations

import torch

from more4d.geometry import DEFAULT_FOV_DEG, backproject_depth, intrinsics_from_fov, project_points
from more4d.scene import Scene4D


def make_test_scene(T: int = 5, H: int = 24, W: int = 32, seed: int = 0) -> Scene4D:
    """A moving toy scene: a slanted textured backdrop (~4-5 m) and a round blob (~2.5 m) that translates.

    Tracks are exact: backdrop points are static, blob points move by a seeded 3D velocity; a backdrop track is
    invisible in the frames where the blob covers its pixel. K comes from `DEFAULT_FOV_DEG`.

    Returns:
        Scene4D with points `(T, H*W, 3)`, colors `(H*W, 3)`, visibility `(T, H*W)`.
    """
    g = torch.Generator().manual_seed(seed)
    K = intrinsics_from_fov(DEFAULT_FOV_DEG, H, W)
    v, u = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")

    # 1) frame-0 depth: a slanted backdrop with a round blob in front of it
    depth = 4.0 + 1.0 * (1.0 - v) + 0.2 * torch.rand((), generator=g)
    cu, cv = 0.35 + 0.3 * torch.rand(2, generator=g)
    radius = 0.18
    blob = ((u - cu) ** 2 * (W / H) ** 2 + (v - cv) ** 2) < radius**2
    depth = torch.where(blob, torch.full_like(depth, 2.5), depth)
    points0 = backproject_depth(depth, K)  # (N, 3)

    # 2) colours: a checker-tinted gradient backdrop and a reddish blob
    checker = ((u * 8).floor() + (v * 6).floor()) % 2
    backdrop = torch.stack([0.3 + 0.4 * u, 0.4 + 0.3 * v, 0.5 + 0.2 * checker], dim=-1)
    colors = torch.where(blob[..., None], torch.tensor([0.9, 0.2, 0.15]), backdrop).reshape(-1, 3)

    # 3) motion: the blob translates with a seeded velocity (metres per frame)
    velocity = (torch.rand(3, generator=g) - 0.5) * torch.tensor([0.3, 0.2, 0.3])
    t = torch.arange(T, dtype=torch.float32)[:, None, None]
    moving = blob.reshape(-1)[None, :, None]
    points = points0[None] + moving * t * velocity

    # 4) visibility: backdrop tracks hidden where the moved blob covers their pixel
    blob_pts = points[:, blob.reshape(-1)]  # (T, B, 3)
    uv_blob, _ = project_points(blob_pts, K)
    uv_bg, _ = project_points(points0, K)
    centre = uv_blob.mean(dim=1)  # (T, 2)
    extent = (uv_blob - centre[:, None]).norm(dim=-1).amax(dim=1)  # (T,)
    covered = (uv_bg[None] - centre[:, None]).norm(dim=-1) < extent[:, None] * 0.95
    visibility = ~(covered & ~moving[..., 0])
    return Scene4D(
        points=points.contiguous(),
        colors=colors.contiguous(),
        visibility=visibility,
        K=K,
        image_size=(H, W),
        fps=8.0,
        prompt="a red ball moving in front of a wall",
        metadata={"source": "more4d.testing.make_test_scene", "seed": seed, "fov_deg": DEFAULT_FOV_DEG,
                  "blob_velocity": [round(float(x), 6) for x in velocity]},
    )
