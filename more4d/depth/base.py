"""Depth estimation interface: metric depth + (optional) intrinsics from one RGB image."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from more4d.errors import InputError

ASPECT_TOLERANCE = 0.02  # a user depth map may differ in size from the image, not in shape


@dataclass
class DepthPrediction:
    """Output of a depth estimator for an image of size `(H, W)`.

    depth: `(H, W)` float32 metric depth along the optical axis (z); non-finite or <= 0 marks invalid pixels.
    K: `(3, 3)` float32 pixel intrinsics for `(H, W)`, or None when the estimator does not predict a camera.
    """

    depth: torch.Tensor
    K: torch.Tensor | None = None


@runtime_checkable
class DepthEstimator(Protocol):
    """Anything that maps an RGB image `(H, W, 3)` float in [0, 1] to a `DepthPrediction` of the same size."""

    def __call__(self, image: torch.Tensor) -> DepthPrediction: ...


def resize_depth(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a depth map `(H, W)` to `size` with nearest sampling (keeps invalid pixels invalid)."""
    if tuple(depth.shape) == tuple(size):
        return depth
    return F.interpolate(depth[None, None].float(), size=size, mode="nearest-exact")[0, 0]


class GivenDepth:
    """"Use this depth map": a `DepthEstimator` returning a user-supplied metric depth map.

    Args:
        depth: `(H, W)` metric depth (array, tensor, or a `.npy` file); it is resized (nearest) to the image
            it is called with, which must have the same aspect ratio.
        K: optional `(3, 3)` intrinsics for the depth map's size; rescaled with it.
    """

    def __init__(self, depth: np.ndarray | torch.Tensor | str | os.PathLike,
                 K: np.ndarray | torch.Tensor | None = None) -> None:
        self.depth = load_depth(depth)
        self.K = None if K is None else _as_intrinsics(K)

    def __call__(self, image: torch.Tensor) -> DepthPrediction:
        h, w = int(image.shape[0]), int(image.shape[1])
        dh, dw = self.depth.shape
        if abs((dw / dh) / (w / h) - 1.0) > ASPECT_TOLERANCE:
            raise InputError(f"depth map of size {dw}x{dh} does not match the image's aspect ratio ({w}x{h})")
        K = None
        if self.K is not None:
            K = self.K.clone()
            K[0] *= w / dw
            K[1] *= h / dh
        return DepthPrediction(depth=resize_depth(self.depth, (h, w)).to(image.device), K=K)


def load_depth(depth: np.ndarray | torch.Tensor | str | os.PathLike) -> torch.Tensor:
    """Read a user depth map (array, tensor or `.npy` file, `(H, W)` or `(H, W, 1)`) as float32 `(H, W)`."""
    if isinstance(depth, (str, os.PathLike)):
        path = Path(depth)
        if not path.is_file():
            raise InputError(f"depth map {str(path)!r} does not exist")
        try:
            depth = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"depth map {str(path)!r} is not a readable .npy array: {exc}") from exc
    if isinstance(depth, torch.Tensor):
        depth = depth.detach().cpu().numpy()
    arr = np.asarray(depth)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or min(arr.shape) < 2 or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"depth map must be a numeric array of shape (H, W), got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.float32)
    valid = np.isfinite(arr) & (arr > 0)
    if not valid.any():
        raise InputError("depth map has no valid pixel (finite and > 0)")
    return torch.from_numpy(np.where(valid, arr, 0.0).astype(np.float32))


def _as_intrinsics(K: np.ndarray | torch.Tensor) -> torch.Tensor:
    K = torch.as_tensor(np.asarray(K), dtype=torch.float32)
    if K.shape != (3, 3) or not torch.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"K must be a finite (3, 3) pinhole matrix with positive focals, got {tuple(K.shape)}")
    return K
