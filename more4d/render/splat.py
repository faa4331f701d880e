"""Z-buffered point splatting: the public `render_points` entry and its pure-PyTorch reference.

Conventions (more4d/geometry.py): OpenCV camera axes (x right, y down, z forward), camera-to-world poses
(`opencv_c2w`), K in pixels, the pixel in row i, column j has its centre at (u, v) = (j + 0.5, i + 0.5).

Each point is a sphere of world radius r. Its screen footprint is the projected covariance
`cov2d = s^2 J J^T` (J: the perspective Jacobian, s = r for disks, s = r / 1.5 for Gaussians; the same
projection gsplat uses, with `eps2d = 0`). A point is splatted onto a small window of pixel offsets around
the pixel it falls in; windows come in a few fixed sizes and points are bucketed by footprint, so the whole
frame batch is a handful of vectorised gathers and `scatter_reduce` calls, with no loop over points.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from more4d.errors import InputError

NEAR_PLANE = 1e-3  # points with camera z below this (or behind the camera) are not drawn
FOOTPRINT_PX = 0.75  # default radius in pixels: any 1-px grid of points covers every pixel centre (> sqrt(2)/2)
GAUSSIAN_SIGMA_PER_RADIUS = 1.0 / 1.5  # gaussian mode: sigma = radius / 1.5, so the 3-sigma support is 2 radii
DEPTH_TOLERANCE = 1e-2  # disk mode: splats within 1 % of the nearest depth count as the same surface
HOLE_THRESHOLD = 0.5  # alpha below this is a hole (nothing covers the pixel)
MAX_FOOTPRINT_PX = 16  # splat windows are at most (2 * 16 + 1)^2 pixels; larger footprints are truncated
ALPHA_MIN = 1.0 / 255.0  # gaussian contributions below this are skipped (as in gsplat)
ALPHA_MAX = 0.999  # single-gaussian alpha cap (as in gsplat)
TRANSMITTANCE_MIN = 1e-4  # a pixel stops accepting contributions once its transmittance would drop below this
_WINDOW_LEVELS = (0, 1, 2, 4, 8, MAX_FOOTPRINT_PX)
_ID_BITS = 32

RenderMode = Literal["disk", "gaussian"]
Backend = Literal["auto", "torch", "gsplat"]


@dataclass
class RenderOutput:
    """Rendered frames.

    Args:
        rgb: `(B, H, W, 3)` float32 in [0, 1], composited over the background.
        depth: `(B, H, W)` float32 camera z of the visible surface (alpha-weighted in gaussian mode), 0 at holes.
        alpha: `(B, H, W)` float32 coverage in [0, 1].
        hole_mask: `(B, H, W)` bool, True where alpha < the hole threshold (no point covers the pixel).
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor
    hole_mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.rgb.shape[0])


@dataclass
class _Splats:
    """Points in camera space, broadcast over the frame batch (all float32 on one device)."""

    means: torch.Tensor  # (B, N, 3) camera coordinates; invalid points hold (0, 0, 1)
    colors: torch.Tensor  # (B, N, 3)
    radius: torch.Tensor  # (B, N) world radius of the disk (sigma = radius / 1.5 for gaussians)
    opacity: torch.Tensor  # (B, N)
    valid: torch.Tensor  # (B, N) bool: finite and in front of the near plane
    K: torch.Tensor  # (B, 3, 3)


def render_points(
    points: torch.Tensor,  # (B, N, 3) | (N, 3) world coordinates
    colors: torch.Tensor,  # (B, N, 3) | (N, 3) RGB in [0, 1]
    c2w: torch.Tensor,  # (B, 4, 4) | (4, 4) opencv_c2w
    K: torch.Tensor,  # (B, 3, 3) | (3, 3) pixels
    height: int,
    width: int,
    *,
    radius: torch.Tensor | float | None = None,  # (B, N) | (N,) | scalar, world units
    opacity: torch.Tensor | float | None = None,  # (B, N) | (N,) | scalar in [0, 1]
    mode: RenderMode = "disk",
    background: Sequence[float] | torch.Tensor = (0.0, 0.0, 0.0),  # (3,)
    backend: Backend = "auto",
    hole_threshold: float = HOLE_THRESHOLD,
) -> RenderOutput:
    """Render coloured points into a batch of `B` frames with a z-buffered splat.

    .. note::
        ``mode="disk"`` draws each point as a hard disk (the projected sphere of world radius ``radius``)
        and keeps, per pixel, the nearest surface: of the splats within ``DEPTH_TOLERANCE`` of the nearest
        depth, the one whose centre is closest to the pixel centre wins. A point always covers the pixel it
        falls in. ``opacity`` blends the winning point over the background.

    .. note::
        ``mode="gaussian"`` draws isotropic 3D Gaussians (sigma = radius / 1.5, projected like gsplat) and
        composites every contribution per pixel front to back in depth order, with gsplat's alpha rules
        (cap 0.999, skip below 1/255, stop when transmittance would fall under 1e-4).

    .. note::
        ``radius=None`` sizes each point to ``FOOTPRINT_PX`` pixels of the rendering camera, so a dense
        H*W point grid rendered from its own camera has no holes. In gaussian mode a given radius is never
        smaller than that footprint, so distant points do not vanish.

    Points that are non-finite, behind the camera or nearer than ``NEAR_PLANE`` are not drawn. Unbatched
    inputs broadcast against batched ones; every batched input must share the same ``B``.

    Args:
        points: `(B, N, 3)` or `(N, 3)` world coordinates.
        colors: `(B, N, 3)` or `(N, 3)` RGB in [0, 1].
        c2w: `(B, 4, 4)` or `(4, 4)` camera-to-world poses, OpenCV axes.
        K: `(B, 3, 3)` or `(3, 3)` intrinsics in pixels.
        height, width: output size in pixels.
        radius: world-space radius per point `(B, N)`, `(N,)` or a scalar; None for the pixel footprint.
        opacity: per-point opacity `(B, N)`, `(N,)` or a scalar in [0, 1]; None for 1.
        mode: "disk" (hard z-buffer, fast) or "gaussian" (front-to-back alpha compositing).
        background: RGB `(3,)` composited where coverage is incomplete.
        backend: "auto" (gsplat for gaussian mode when importable on CUDA, else torch), "torch" or "gsplat".
        hole_threshold: pixels with alpha below this are holes.

    Returns:
        `RenderOutput` with rgb `(B, H, W, 3)`, depth `(B, H, W)`, alpha `(B, H, W)`, hole_mask `(B, H, W)`;
        B = 1 when no input is batched.

    Example:
        >>> K = more4d.geometry.intrinsics_from_fov(55.0, 64, 64)
        >>> pts = torch.rand(1000, 3) + torch.tensor([0.0, 0.0, 2.0])
        >>> out = render_points(pts, torch.rand(1000, 3), torch.eye(4), K, 64, 64)
        >>> out.rgb.shape, out.hole_mask.shape
        (torch.Size([1, 64, 64, 3]), torch.Size([1, 64, 64]))
    """
    from more4d.render.backends import resolve_backend, splat_gsplat

    if mode not in ("disk", "gaussian"):
        raise InputError(f"mode must be 'disk' or 'gaussian', got {mode!r}")
    height, width = _check_size(height, width)
    if not (isinstance(hole_threshold, (int, float)) and 0.0 < hole_threshold <= 1.0):
        raise InputError(f"hole_threshold must be in (0, 1], got {hole_threshold!r}")
    device = points.device if isinstance(points, torch.Tensor) else torch.device("cpu")
    with torch.autocast(device.type, enabled=False):  # projection and z-buffer stay float32 inside autocast
        splats = _prepare(points, colors, c2w, K, radius, opacity, mode)
        bg = _check_background(background, splats.means.device)
        if resolve_backend(backend, mode, splats.means.device) == "gsplat":
            rgb, depth, alpha = splat_gsplat(
                splats.means, splats.colors, splats.radius * GAUSSIAN_SIGMA_PER_RADIUS, splats.opacity,
                splats.valid, splats.K, height, width, near_plane=NEAR_PLANE,
            )
        else:
            rgb, depth, alpha = _splat_torch(splats, height, width, mode)
    hole = alpha < hole_threshold
    rgb = rgb + (1.0 - alpha)[..., None] * bg
    depth = torch.where(hole, torch.zeros_like(depth), depth)
    return RenderOutput(rgb=rgb, depth=depth, alpha=alpha, hole_mask=hole)


# ---------------------------------------------------------------------------------------------------------
# input checking and broadcasting


def _check_size(height: int, width: int) -> tuple[int, int]:
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (height, width)):
        raise InputError(f"height and width must be ints, got {height!r} and {width!r}")
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise InputError(f"height and width must be positive, got ({height}, {width})")
    return height, width


def _as_batched(x: torch.Tensor, name: str, tail: tuple[int | None, ...], device, shape_text: str) -> torch.Tensor:
    """`x` as a float32 tensor `(B,) + tail` (B = 1 when unbatched); `None` in `tail` matches any size."""
    x = torch.as_tensor(x, device=device)
    if x.ndim == len(tail):
        x = x[None]
    if x.ndim != len(tail) + 1 or any(t is not None and s != t for s, t in zip(x.shape[1:], tail)):
        raise InputError(f"{name} must have shape {shape_text}, got {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64, torch.uint8)):
        raise InputError(f"{name} must be a float tensor, got dtype {x.dtype}")
    return x.float()


def _broadcast_batch(tensors: dict[str, torch.Tensor]) -> int:
    sizes = {name: int(t.shape[0]) for name, t in tensors.items()}
    batch = max(sizes.values())
    bad = {name: s for name, s in sizes.items() if s not in (1, batch)}
    if bad or batch == 0:
        raise InputError(f"batch sizes must agree (or be unbatched): got {sizes}")
    return batch


def _per_point(x, name: str, batch: int, n: int, device, lo: float, hi: float) -> torch.Tensor:
    """A scalar, `(N,)` or `(B, N)` per-point value as float32 `(B, N)`, checked to lie in [lo, hi]."""
    x = torch.as_tensor(x, device=device)
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise InputError(f"{name} must be a float tensor, got dtype {x.dtype}")
    x = x.float()
    if x.ndim == 0:
        x = x.expand(n)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != n or x.shape[0] not in (1, batch):
        raise InputError(f"{name} must be a scalar or have shape (N,) or (B, N) = ({batch}, {n}), got {tuple(x.shape)}")
    if not torch.isfinite(x).all() or (x < lo).any() or (x > hi).any():
        raise InputError(f"{name} must be finite and within [{lo}, {hi}]")
    return x.expand(batch, n)


def _check_background(background, device) -> torch.Tensor:
    bg = torch.as_tensor(background, dtype=torch.float32, device=device)
    if bg.shape != (3,) or not torch.isfinite(bg).all():
        raise InputError(f"background must be 3 finite RGB values, got {background!r}")
    return bg


def _prepare(points, colors, c2w, K, radius, opacity, mode: str) -> _Splats:
    """Check shapes and values, broadcast over the batch, move points into each camera's frame."""
    if not isinstance(points, torch.Tensor):
        raise InputError(f"points must be a torch.Tensor, got {type(points).__name__}")
    device = points.device
    pts = _as_batched(points, "points", (None, 3), device, "(B, N, 3) or (N, 3)")
    cols = _as_batched(colors, "colors", (None, 3), device, "(B, N, 3) or (N, 3)")
    poses = _as_batched(c2w, "c2w", (4, 4), device, "(B, 4, 4) or (4, 4)")
    Ks = _as_batched(K, "K", (3, 3), device, "(B, 3, 3) or (3, 3)")
    n = pts.shape[1]
    if n == 0:
        raise InputError("points must contain at least one point, got N = 0")
    if cols.shape[1] != n:
        raise InputError(f"colors must have one row per point: points has N = {n}, colors has {cols.shape[1]}")
    batch = _broadcast_batch({"points": pts, "colors": cols, "c2w": poses, "K": Ks})
    if not torch.isfinite(cols).all():
        raise InputError("colors contain NaN or infinite values")
    if not torch.isfinite(poses).all() or not torch.isfinite(Ks).all():
        raise InputError("c2w and K must be finite")
    if (Ks[:, 0, 0] <= 0).any() or (Ks[:, 1, 1] <= 0).any():
        raise InputError(f"K must have positive focal lengths, got fx={Ks[:, 0, 0].tolist()}, fy={Ks[:, 1, 1].tolist()}")
    rot = poses[:, :3, :3]
    rot64 = rot.double()  # float64: immune to TF32 matmuls enabled by training scripts
    if (rot64.transpose(1, 2) @ rot64 - torch.eye(3, device=device, dtype=torch.float64)).abs().amax() > 1e-2:
        raise InputError("c2w rotations must be orthonormal (camera-to-world rigid poses)")

    # world -> camera: x_cam = R^T (x_world - t)
    means = torch.einsum("bnj,bji->bni", pts - poses[:, None, :3, 3], rot)
    means = means.expand(batch, n, 3)
    valid = torch.isfinite(means).all(-1) & (means[..., 2] > NEAR_PLANE)
    means = torch.where(valid[..., None], means, means.new_tensor([0.0, 0.0, 1.0]))
    Ks = Ks.expand(batch, 3, 3)
    pixel_size = means[..., 2] / torch.sqrt(Ks[:, 0, 0] * Ks[:, 1, 1])[:, None]  # (B, N) world size of 1 px
    footprint = FOOTPRINT_PX * pixel_size
    if radius is None:
        rad = footprint
    else:
        rad = _per_point(radius, "radius", batch, n, device, 0.0, math.inf)
        if mode == "gaussian":
            rad = torch.maximum(rad, footprint)
    alpha = torch.ones(batch, n, device=device) if opacity is None else _per_point(
        opacity, "opacity", batch, n, device, 0.0, 1.0)
    return _Splats(means, cols.expand(batch, n, 3), rad, alpha, valid, Ks)


# ---------------------------------------------------------------------------------------------------------
# pure-PyTorch reference rasterizer


def _project(s: _Splats, height: int, width: int, mode: str):
    """Pixel centres `(B, N)` u, v, the inverse 2D covariance (conic a, b, c) and window half-sizes."""
    fx, fy = s.K[:, 0, 0, None], s.K[:, 1, 1, None]
    cx, cy = s.K[:, 0, 2, None], s.K[:, 1, 2, None]
    x, y, z = s.means.unbind(-1)
    u, v = fx * x / z + cx, fy * y / z + cy
    # perspective Jacobian with gsplat's clamp of x/z, y/z to 1.3x the field of view
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    tx = torch.minimum(torch.maximum(x / z, -lim_x_neg), lim_x_pos)
    ty = torch.minimum(torch.maximum(y / z, -lim_y_neg), lim_y_pos)
    scale = s.radius * (GAUSSIAN_SIGMA_PER_RADIUS if mode == "gaussian" else 1.0)
    s2 = (scale / z) ** 2
    cov_a = s2 * fx * fx * (1.0 + tx * tx)
    cov_b = s2 * fx * fy * tx * ty
    cov_c = s2 * fy * fy * (1.0 + ty * ty)
    det = (cov_a * cov_c - cov_b * cov_b).clamp_min(1e-20)
    conic = (cov_c / det, -cov_b / det, cov_a / det)
    support = 3.0 if mode == "gaussian" else 1.0  # 3 sigma, or the disk edge
    ext_x, ext_y = support * cov_a.sqrt(), support * cov_c.sqrt()
    half = torch.floor(torch.maximum(ext_x, ext_y) + 0.5).clamp(max=MAX_FOOTPRINT_PX)
    onscreen = (u + ext_x + 1.0 > 0) & (u - ext_x - 1.0 < width) & (v + ext_y + 1.0 > 0) & (v - ext_y - 1.0 < height)
    keep = s.valid & onscreen
    return u, v, conic, half, keep


def _splat_entries(s: _Splats, height: int, width: int, mode: str):
    """All (pixel, point) pairs a point covers.

    Returns flat pixel ids `(E,)` (b*H*W + row*W + col; B*H*W, a discard slot, for pixels off the image),
    flat point ids `(E,)` (b*N + n) and the squared Mahalanobis distance `q (E,)` of the pixel centre from
    the splat centre.
    """
    u, v, conic, half, keep = _project(s, height, width, mode)
    n = s.means.shape[1]
    u, v = u.clamp(-1e6, 1e6).reshape(-1), v.clamp(-1e6, 1e6).reshape(-1)
    ca, cb, cc = (c.reshape(-1) for c in conic)
    num_pix = s.means.shape[0] * height * width
    frame_of = torch.arange(s.means.shape[0], device=u.device).repeat_interleave(n)
    level_of = torch.bucketize(half.reshape(-1), torch.tensor(_WINDOW_LEVELS, dtype=half.dtype, device=half.device))
    keep = keep.reshape(-1)
    q_max = 2.0 * torch.log(s.opacity.reshape(-1).clamp_min(1e-12) / ALPHA_MIN)
    pix, pid, dist = [], [], []
    for li, level in enumerate(_WINDOW_LEVELS):
        ids = torch.nonzero(keep & (level_of == li)).squeeze(1)  # flat point ids b*N + n
        if ids.numel() == 0:
            continue
        r = torch.arange(-level, level + 1, device=u.device)
        off_y, off_x = (o.reshape(-1) for o in torch.meshgrid(r, r, indexing="ij"))  # (O,)
        pu, pv = u[ids], v[ids]
        base_x, base_y = torch.floor(pu), torch.floor(pv)  # the pixel each point falls in
        dx = (base_x + 0.5 - pu)[:, None] + off_x.float()  # (M, O) pixel centre - splat centre
        dy = (base_y + 0.5 - pv)[:, None] + off_y.float()
        q = dx * (ca[ids, None] * dx + 2.0 * cb[ids, None] * dy) + cc[ids, None] * dy * dy
        if mode == "gaussian":
            hit = q <= q_max[ids, None]  # opacity * exp(-q/2) >= ALPHA_MIN
        else:
            hit = (q <= 1.0) | ((off_x == 0) & (off_y == 0))  # the disk, and always the pixel it falls in
        sel = torch.nonzero(hit.reshape(-1)).squeeze(1)
        m, o = sel // off_x.numel(), sel % off_x.numel()
        col, row = base_x.long()[m] + off_x[o], base_y.long()[m] + off_y[o]
        inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
        pixel = (frame_of[ids[m]] * height + row) * width + col
        pix.append(torch.where(inside, pixel, torch.full_like(pixel, num_pix)))
        pid.append(ids[m])
        dist.append(q.reshape(-1)[sel])
    if not pix:
        empty = torch.zeros(0, dtype=torch.long, device=u.device)
        return empty, empty, u.new_zeros(0)
    return torch.cat(pix), torch.cat(pid), torch.cat(dist)


def _splat_torch(s: _Splats, height: int, width: int, mode: str):
    """Reference rasterizer: rgb `(B, H, W, 3)` (not yet over the background), depth and alpha `(B, H, W)`."""
    batch = s.means.shape[0]
    num_pix = batch * height * width
    pix, pid, q = _splat_entries(s, height, width, mode)
    colors = s.colors.reshape(-1, 3)
    z = s.means[..., 2].reshape(-1)
    opacity = s.opacity.reshape(-1)
    if mode == "disk":
        rgb, depth, alpha = _composite_disks(pix, pid, q, colors, z, opacity, num_pix + 1)
    else:
        rgb, depth, alpha = _composite_gaussians(pix, pid, q, colors, z, opacity, num_pix + 1)
    rgb, depth, alpha = rgb[:num_pix], depth[:num_pix], alpha[:num_pix]  # drop the off-image slot
    return rgb.reshape(batch, height, width, 3), depth.reshape(batch, height, width), alpha.reshape(batch, height, width)


def _composite_disks(pix, pid, q, colors, z, opacity, num_pix):
    """Nearest surface per pixel; within it, the splat whose centre is closest to the pixel centre wins."""
    ze = z[pid].detach()
    zmin = torch.full((num_pix,), math.inf, device=z.device).scatter_reduce(0, pix, ze, "amin")
    cand = ze <= zmin[pix] * (1.0 + DEPTH_TOLERANCE)
    # winner key: quantised distance of the pixel centre from the splat centre, then point id
    qi = (q.detach().clamp(0.0, 255.0) * (1 << 22)).long()
    key = (qi << _ID_BITS) | pid
    best = torch.full((num_pix,), torch.iinfo(torch.long).max, device=z.device, dtype=torch.long)
    best = best.scatter_reduce(0, pix[cand], key[cand], "amin")
    covered = best != torch.iinfo(torch.long).max
    win_pix = torch.nonzero(covered, as_tuple=True)[0]
    win_pid = best[win_pix] & ((1 << _ID_BITS) - 1)
    a = opacity[win_pid]
    rgb = colors.new_zeros(num_pix, 3).index_put((win_pix,), colors[win_pid] * a[:, None])
    depth = z.new_zeros(num_pix).index_put((win_pix,), z[win_pid])
    alpha = z.new_zeros(num_pix).index_put((win_pix,), a)
    return rgb, depth, alpha


def _composite_gaussians(pix, pid, q, colors, z, opacity, num_pix):
    """Front-to-back compositing of every contribution per pixel, in depth order (as gsplat).

    One sort orders the entries by (pixel, depth); the transmittance in front of each entry is the exp of a
    segmented cumulative sum of log(1 - alpha) (float64), so there is no loop over points, pixels or layers.
    """
    # positive float32 depths order like their int32 bit patterns (31 bits): sort key = pixel, then depth
    zbits = z.detach().contiguous().view(torch.int32).long()
    key, order = torch.sort((pix << 31) | zbits[pid], stable=True)
    pix, pid = key >> 31, pid[order]
    alpha_e = (opacity[pid] * torch.exp(-0.5 * q[order])).clamp(max=ALPHA_MAX)
    pos = torch.arange(pix.numel(), device=pix.device)
    is_start = torch.ones_like(pix, dtype=torch.bool)
    is_start[1:] = pix[1:] != pix[:-1]
    start = torch.cummax(torch.where(is_start, pos, torch.zeros_like(pos)), 0).values  # first entry of the pixel
    log_keep = torch.log1p(-alpha_e.double())
    before = torch.cumsum(log_keep, 0) - log_keep  # sum of log(1 - alpha) over all earlier entries
    trans = torch.exp(before - before[start]).float()  # transmittance in front of each entry, within its pixel
    # gsplat: the contribution that would drop transmittance to 1e-4 ends the pixel and is not added
    vis = torch.where(trans * (1.0 - alpha_e) > TRANSMITTANCE_MIN, alpha_e * trans, torch.zeros_like(trans))
    rgb = colors.new_zeros(num_pix, 3).index_add(0, pix, vis[:, None] * colors[pid])
    depth = z.new_zeros(num_pix).index_add(0, pix, vis * z[pid])
    alpha = z.new_zeros(num_pix).index_add(0, pix, vis)
    depth = depth / alpha.clamp_min(1e-10)
    return rgb, depth, alpha
