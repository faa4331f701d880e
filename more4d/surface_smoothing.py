"""Keep each surface whole: diffusion of per-pixel values over the pixels of one surface of a depth map.

Two tiny-model outputs go through it. The motion: a small trajectory model draws the boundary of what moves where its
training shapes had theirs, often across the middle of a real object; the two sides then part and the object tears.
The depth: on a photo a small depth net steps a few percent between pixels of one wall, and every such step opens a
hole once the camera moves. Averaging the values of grid neighbours that lie on one surface (`same_surface` with
`SURFACE_EDGE_RATIO`) spreads such steps into ramps, while steps at depth discontinuities, where one surface passes
in front of another, stay sharp: their gaps are disocclusions, holes for 4D-ViSM to fill.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from more4d.errors import InputError
from more4d.geometry import same_surface, valid_depth_mask

MAX_SMOOTHING = 10_000
# Values part only across depth steps over 10%, looser than the renderer's 4% (`EDGE_DEPTH_RATIO`): on photos the
# tiny depth model steps 4-10% between pixels of one surface, and motion cut there opens holes inside objects
SURFACE_EDGE_RATIO = 0.1


def check_surface_smoothing(iterations: object) -> int:
    """Raise `InputError` unless `iterations` is an integer in `[0, MAX_SMOOTHING]`."""
    if isinstance(iterations, bool) or not isinstance(iterations, int) or not 0 <= iterations <= MAX_SMOOTHING:
        raise InputError(f"`surface_smoothing` must be an integer in [0, {MAX_SMOOTHING}], got {iterations!r}")
    return iterations


def smooth_over_surfaces(values: torch.Tensor, depth: torch.Tensor, iterations: int) -> torch.Tensor:
    """`iterations` Jacobi steps of `values (..., H, W)` (a motion video `(3, T, H, W)`, a log depth `(H, W)`): each
    pixel becomes the mean of itself and its 4-neighbours on its surface of `depth (H, W)` (depth steps under
    `SURFACE_EDGE_RATIO`; pixels without a valid depth, `valid_depth_mask`, are linked to nothing).

    The spread grows as the square root of `iterations` (100: a ramp about 20 px wide). Returns a new tensor of
    the input's dtype; 0 iterations return the input unchanged.
    """
    check_surface_smoothing(iterations)
    H, W = values.shape[-2:]
    if tuple(depth.shape) != (H, W):
        raise InputError(f"depth {tuple(depth.shape)} does not match the values' {H}x{W}")
    if iterations == 0:
        return values
    z = depth.to(values.device, torch.float32)
    valid = valid_depth_mask(z)
    across = (same_surface(z[:, 1:], z[:, :-1], SURFACE_EDGE_RATIO) & valid[:, 1:] & valid[:, :-1]).float()
    down = (same_surface(z[1:], z[:-1], SURFACE_EDGE_RATIO) & valid[1:] & valid[:-1]).float()
    inv_degree = 1.0 / (1.0 + F.pad(across, (1, 0)) + F.pad(across, (0, 1)) + F.pad(down, (0, 0, 1, 0))
                        + F.pad(down, (0, 0, 0, 1)))
    x = values.reshape(-1, H, W).float().clone()
    for _ in range(iterations):
        total = x.clone()
        total[:, :, :-1] += across * x[:, :, 1:]
        total[:, :, 1:] += across * x[:, :, :-1]
        total[:, :-1] += down * x[:, 1:]
        total[:, 1:] += down * x[:, :-1]
        x = total.mul_(inv_degree)
    return x.view(values.shape).to(values.dtype)


def smooth_depth_over_surfaces(depth: torch.Tensor, iterations: int) -> torch.Tensor:
    """`smooth_over_surfaces` of the log of `depth (H, W)`, its surfaces its own; invalid pixels
    (`valid_depth_mask`) stay 0."""
    valid = valid_depth_mask(depth)
    if not check_surface_smoothing(iterations):
        return depth
    log_depth = torch.where(valid, depth, 1.0).log()
    smoothed = smooth_over_surfaces(log_depth, torch.where(valid, depth, 0.0), iterations).exp()
    return torch.where(valid, smoothed, torch.zeros_like(smoothed))
