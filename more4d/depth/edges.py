"""Depth edges that follow the image: a colour-weighted median of the log depth."""

from __future__ import annotations

import torch
import torch.nn.functional as F

MEDIAN_COLOR_SIGMA = 0.1  # colour distance (RGB in [0, 1]) at which a neighbour's vote falls to exp(-1/2)


def sharpen_depth_edges(log_depth: torch.Tensor, image: torch.Tensor, radius: int) -> torch.Tensor:
    """The weighted median of `log_depth (H, W)` over each `(2 radius + 1)`-pixel window, each neighbour weighted by
    its colour similarity to the centre in `image (H, W, 3)` (RGB in [0, 1]).

    A small depth net draws a ramp across an object's outline; the points on that ramp float between the object
    and what is behind it and tear apart in any other view. The median picks a value from one side or the other,
    the colour weights pick the side the pixel's colour belongs to, so a ramp up to about `radius` pixels wide
    becomes a step at the image's edge, and a wider one steepens, while flat and smoothly slanted surfaces keep their
    depth (as 3D Photo Inpainting prepares its depth). Written here because OpenCV's `ximgproc.weightedMedianFilter`
    (opencv-contrib 5.0.0.93) returns different values on repeated calls with the same input.
    """
    H, W = log_depth.shape
    k = 2 * radius + 1
    rgb = image.float().permute(2, 0, 1)
    values = F.unfold(F.pad(log_depth.float()[None, None], (radius,) * 4, mode="replicate"), k)[0]  # (k*k, H*W)
    colors = F.unfold(F.pad(rgb[None], (radius,) * 4, mode="replicate"), k).view(3, k * k, H * W)
    distance = (colors - rgb.reshape(3, 1, H * W)).square().sum(0)
    weights = torch.exp(-distance / (2 * MEDIAN_COLOR_SIGMA**2))
    values, order = values.sort(0)
    cumulative = weights.gather(0, order).cumsum(0)
    median = (cumulative < cumulative[-1:] / 2).sum(0, keepdim=True).clamp_max(k * k - 1)
    return values.gather(0, median).view(H, W).to(log_depth.dtype)
