"""Camera geometry and the depth-guided motion normalisation (docs/method.md, "Depth-guided motion normalisation").

Conventions: OpenCV camera axes (x right, y down, z forward); K in pixels with square pixels; the pixel in
row i, column j has its centre at (u, v) = (j + 0.5, i + 0.5), so a centred principal point is (W/2, H/2).
Every FOV is the vertical FOV in degrees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from more4d.errors import InputError

DEFAULT_FOV_DEG = 55.0  # vertical FOV used when no depth model predicts K
# A caption's direction word -> (axis, sign) in camera-0 OpenCV x, y, which are also the image's u, v
DIRECTION_AXES = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}
# Seed-compat pseudo-focals (alpha_x, alpha_y): the authors' training data normalises with a 720x960 source
# resized to 368x512, alpha_x = (512 / 368) / (960 / 720) = 24/23, alpha_y = 1, whatever the tensor size.
SEED_MOTION_ALPHAS = ((512 / 368) / (960 / 720), 1.0)
DEPTH_EPS = 1e-4
EDGE_DEPTH_RATIO = 0.04  # neighbouring frame-0 depths further apart than 4% belong to different surfaces


def _check_size(height: int, width: int) -> None:
    if int(height) <= 0 or int(width) <= 0:
        raise InputError(f"image size must be positive (height, width), got ({height}, {width})")


def _check_K(K: torch.Tensor) -> torch.Tensor:
    K = torch.as_tensor(K)
    if K.shape[-2:] != (3, 3):
        raise InputError(f"K must have shape (3, 3), got {tuple(K.shape)}")
    if not torch.isfinite(K).all():
        raise InputError("K contains NaN or infinite values")
    if (K[..., 0, 0] <= 0).any() or (K[..., 1, 1] <= 0).any():
        raise InputError(f"K must have positive focal lengths fx, fy, got {K[..., 0, 0].tolist()}, {K[..., 1, 1].tolist()}")
    return K


def intrinsics_from_fov(fov_deg: float, height: int, width: int) -> torch.Tensor:
    """Pinhole K `(3, 3)` float32 for a vertical FOV in degrees, square pixels, centred principal point."""
    _check_size(height, width)
    if not math.isfinite(fov_deg) or not 0.0 < fov_deg < 180.0:
        raise InputError(f"fov_deg must be in (0, 180) degrees, got {fov_deg}")
    f = 0.5 * height / math.tan(math.radians(fov_deg) / 2.0)
    return torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float32)


def fov_from_intrinsics(K: torch.Tensor, height: int) -> float:
    """Vertical FOV in degrees of K `(3, 3)` for an image `height` pixels tall."""
    K = _check_K(K)
    _check_size(height, 1)
    return math.degrees(2.0 * math.atan(0.5 * height / float(K[1, 1])))


def resize_intrinsics(
    K: torch.Tensor,
    src_hw: Sequence[int],
    dst_hw: Sequence[int],
    crop: Sequence[int] | None = None,
) -> torch.Tensor:
    """K `(3, 3)` after cropping `crop = (top, left, height, width)` (source pixels) and resizing to `dst_hw`."""
    K = _check_K(K).clone().to(torch.float32)
    src_h, src_w = (int(v) for v in src_hw)
    dst_h, dst_w = (int(v) for v in dst_hw)
    _check_size(src_h, src_w)
    _check_size(dst_h, dst_w)
    top, left, crop_h, crop_w = (0, 0, src_h, src_w) if crop is None else (int(v) for v in crop)
    if crop_h <= 0 or crop_w <= 0 or top < 0 or left < 0 or top + crop_h > src_h or left + crop_w > src_w:
        raise InputError(f"crop (top, left, height, width) must lie inside the {src_h}x{src_w} image, got {tuple(crop)}")
    K[0, 2] -= left
    K[1, 2] -= top
    sx, sy = dst_w / crop_w, dst_h / crop_h
    K[0] *= sx
    K[1] *= sy
    return K


def same_surface(za: torch.Tensor, zb: torch.Tensor, ratio: float = EDGE_DEPTH_RATIO) -> torch.Tensor:
    """Whether neighbouring pixels of depths `za` and `zb` lie on one surface: their depths differ by less than
    `ratio` of the nearer one (with `EDGE_DEPTH_RATIO` the renderer closes the gaps between such points and opens
    those between others)."""
    return (za - zb).abs() < ratio * torch.minimum(za, zb)


def valid_depth_mask(depth: torch.Tensor, eps: float = DEPTH_EPS) -> torch.Tensor:
    """Bool mask (same shape) of depths that are finite and > eps. Invalid depths are masked, never replaced."""
    return torch.isfinite(depth) & (depth > eps)


def pixel_grid(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Pixel centres `(H*W, 2)` float32 as (u, v) = (j + 0.5, i + 0.5), row-major."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32) + 0.5,
        torch.arange(width, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)


def backproject_depth(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-space points `(H*W, 3)` of a z-depth map `(H, W)`, row-major pixels.

    Pure geometry: invalid depths give invalid points; use `valid_depth_mask(depth)` to mask them.
    """
    if depth.ndim != 2:
        raise InputError(f"depth must have shape (H, W), got {tuple(depth.shape)}")
    K = _check_K(K).to(device=depth.device, dtype=torch.float32)
    uv = pixel_grid(depth.shape[0], depth.shape[1], device=depth.device)
    z = depth.reshape(-1).to(torch.float32)
    x = (uv[:, 0] - K[0, 2]) / K[0, 0] * z
    y = (uv[:, 1] - K[1, 2]) / K[1, 1] * z
    return torch.stack([x, y, z], dim=-1)


def project_points(points: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project camera-space points `(..., N, 3)` with K `(3, 3)` or `(..., 3, 3)` to uv `(..., N, 2)`, z `(..., N)`.

    Points with z <= 1e-4 get uv computed with z = 1e-4; mask them with `z > 1e-4`.
    """
    if points.shape[-1] != 3:
        raise InputError(f"points must have shape (..., 3), got {tuple(points.shape)}")
    K = _check_K(K).to(device=points.device, dtype=points.dtype)
    z = points[..., 2]
    zs = z.clamp(min=DEPTH_EPS)
    fx, fy, cx, cy = K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2]
    if K.ndim > 2:  # batched K (..., 3, 3) broadcasts over the point axis
        fx, fy, cx, cy = fx[..., None], fy[..., None], cx[..., None], cy[..., None]
    u = fx * points[..., 0] / zs + cx
    v = fy * points[..., 1] / zs + cy
    return torch.stack([u, v], dim=-1), z


def motion_alphas(K: torch.Tensor, image_size: Sequence[int], seed_compat: bool = False) -> tuple[float, float]:
    """Pseudo-focals (alpha_x, alpha_y) = (fx / W, fy / H); `seed_compat` returns `SEED_MOTION_ALPHAS`."""
    if seed_compat:
        return SEED_MOTION_ALPHAS
    K = _check_K(K)
    height, width = (int(v) for v in image_size)
    _check_size(height, width)
    return float(K[0, 0]) / width, float(K[1, 1]) / height


def _alpha_tensor(alphas: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    ax, ay = (float(a) for a in alphas)
    if not (math.isfinite(ax) and math.isfinite(ay) and ax > 0 and ay > 0):
        raise InputError(f"alphas must be two positive finite numbers, got {tuple(alphas)}")
    return torch.tensor([ax, ay, 1.0], dtype=like.dtype, device=like.device)


def normalize_motion(points: torch.Tensor, alphas: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth-guided motion normalisation of tracks `(..., T, N, 3)` -> (m `(..., T, N, 3)`, valid `(..., N)` bool).

    m = (ax*dx/z0, ay*dy/z0, dz/z0) with d = P_t - P_0; frame 0 is exactly zero and scaling the scene leaves m
    unchanged. Tracks whose z0 is not finite or <= 1e-4 (or with any non-finite coordinate) are masked:
    m = 0 there and `valid` is False.
    """
    if points.ndim < 3 or points.shape[-1] != 3:
        raise InputError(f"points must have shape (T, N, 3), got {tuple(points.shape)}")
    p0 = points[..., :1, :, :]
    z0 = p0[..., 2:3]
    valid = valid_depth_mask(z0[..., 0, :, 0]) & torch.isfinite(points).all(dim=-1).all(dim=-2)
    safe_z0 = torch.where(valid[..., None, :, None], z0, torch.ones_like(z0))
    m = (points - p0) * _alpha_tensor(alphas, points) / safe_z0
    m = torch.where(valid[..., None, :, None], m, torch.zeros_like(m))
    return m, valid


def denormalize_motion(m: torch.Tensor, points0: torch.Tensor, alphas: Sequence[float]) -> torch.Tensor:
    """Exact inverse of `normalize_motion`: m `(..., T, N, 3)` and frame-0 points `(..., N, 3)` -> `(..., T, N, 3)`.

    P_t = P_0 + (m_x*z0/ax, m_y*z0/ay, m_z*z0). Tracks with invalid z0 stay at P_0.
    """
    if m.ndim < 3 or m.shape[-1] != 3 or points0.shape[-2:] != m.shape[-2:]:
        raise InputError(f"m must be (T, N, 3) and points0 (N, 3) with the same N, got {tuple(m.shape)} and {tuple(points0.shape)}")
    p0 = points0.to(m.dtype)[..., None, :, :]
    z0 = p0[..., 2:3]
    valid = valid_depth_mask(z0)
    delta = m * torch.where(valid, z0, torch.zeros_like(z0)) / _alpha_tensor(alphas, m)
    return p0 + delta


def motion_to_video(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Motion field `(..., T, H*W, 3)` -> motion video `(..., 3, T, H, W)`."""
    if m.ndim < 3 or m.shape[-1] != 3 or m.shape[-2] != height * width:
        raise InputError(f"m must have shape (T, {height}*{width}, 3), got {tuple(m.shape)}")
    video = m.reshape(*m.shape[:-2], height, width, 3)
    return video.movedim(-1, -4)


def video_to_motion(video: torch.Tensor) -> torch.Tensor:
    """Motion video `(..., 3, T, H, W)` -> motion field `(..., T, H*W, 3)`."""
    if video.ndim < 4 or video.shape[-4] != 3:
        raise InputError(f"motion video must have shape (3, T, H, W), got {tuple(video.shape)}")
    m = video.movedim(-4, -1)
    return m.reshape(*m.shape[:-3], -1, 3)


def moving_tracks(video: torch.Tensor) -> torch.Tensor:
    """Bool `(..., H, W)`: the tracks of a motion video `(..., 3, T, H, W)` that move in some frame."""
    return video.abs().amax(dim=(-4, -3)) > 1e-4
