"""Motion that keeps each surface whole: diffusion of a motion field over the pixels of one surface.

A small trajectory model draws the boundary of what moves where its training shapes had theirs, often across the
middle of a real object; the two sides then part and the object tears. Averaging the motion between grid
neighbours that lie on one surface (`same_surface` with `MOTION_EDGE_RATIO`) spreads such a step into a ramp that
the surface follows by stretching, while steps at depth discontinuities, where one surface passes in front of
another, stay sharp: their gaps are disocclusions, holes for 4D-ViSM to fill.
"""

from __future__ import annotations

import torch

from more4d.errors import InputError
from more4d.geometry import same_surface

MAX_SMOOTHING = 10_000
# Motion parts only across depth steps over 10%, looser than the renderer's 4% (`EDGE_DEPTH_RATIO`): on photos the
# tiny depth model steps 4-10% between pixels of one surface, and motion cut there opens holes inside objects
MOTION_EDGE_RATIO = 0.1


def check_surface_smoothing(iterations: object) -> int:
    """Raise `InputError` unless `iterations` is an integer in `[0, MAX_SMOOTHING]`."""
    if isinstance(iterations, bool) or not isinstance(iterations, int) or not 0 <= iterations <= MAX_SMOOTHING:
        raise InputError(f"`surface_smoothing` must be an integer in [0, {MAX_SMOOTHING}], got {iterations!r}")
    return iterations


def smooth_motion_on_surfaces(video: torch.Tensor, depth: torch.Tensor, iterations: int) -> torch.Tensor:
    """`iterations` Jacobi steps of the motion video `(C, T, H, W)`: each pixel becomes the mean of itself and its
    4-neighbours on its surface of the frame-0 `depth (H, W)` (steps under `MOTION_EDGE_RATIO`; 0 = invalid,
    linked to nothing).

    The spread grows as the square root of `iterations` (100: a ramp about 20 px wide). Returns a new tensor of
    the input's dtype; 0 iterations return the input unchanged.
    """
    check_surface_smoothing(iterations)
    C, T, H, W = video.shape
    if tuple(depth.shape) != (H, W):
        raise InputError(f"depth {tuple(depth.shape)} does not match the motion video's {H}x{W}")
    if iterations == 0:
        return video
    z = depth.to(video.device, torch.float32)
    valid = z > 0
    across = (same_surface(z[:, 1:], z[:, :-1], MOTION_EDGE_RATIO) & valid[:, 1:] & valid[:, :-1]).float()  # (H, W-1)
    down = (same_surface(z[1:], z[:-1], MOTION_EDGE_RATIO) & valid[1:] & valid[:-1]).float()  # (H-1, W)
    inv_degree = 1.0 / (1.0 + torch.nn.functional.pad(across, (1, 0)) + torch.nn.functional.pad(across, (0, 1))
                        + torch.nn.functional.pad(down, (0, 0, 1, 0)) + torch.nn.functional.pad(down, (0, 0, 0, 1)))
    x = video.reshape(C * T, H, W).float().clone()
    for _ in range(iterations):
        total = x.clone()
        total[:, :, :-1] += across * x[:, :, 1:]
        total[:, :, 1:] += across * x[:, :, :-1]
        total[:, :-1] += down * x[:, 1:]
        total[:, 1:] += down * x[:, :-1]
        x = total.mul_(inv_degree)
    return x.view(C, T, H, W).to(video.dtype)
