"""Optional fast backends for `render_points`, detected at run time (never a hard import).

gsplat (https://github.com/nerfstudio-project/gsplat) rasterizes the gaussian mode on CUDA. It is used when
`backend="auto"`, the mode is "gaussian", the tensors are on a CUDA device and `import gsplat` succeeds;
otherwise the pure-PyTorch reference in `splat.py` runs. Install it with `pip install gsplat` (CUDA build).
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

import torch

from more4d.errors import InputError


@functools.cache
def _import_gsplat() -> ModuleType | None:
    try:
        return importlib.import_module("gsplat")
    except Exception:  # not installed, or its CUDA extension cannot load: fall back to torch
        return None


def gsplat_available(device: torch.device | str) -> bool:
    """True when gsplat can rasterize on `device` (a CUDA device and an importable gsplat)."""
    return torch.device(device).type == "cuda" and torch.cuda.is_available() and _import_gsplat() is not None


def resolve_backend(backend: str, mode: str, device: torch.device | str) -> str:
    """The backend that will run: "torch" or "gsplat" (for `backend` in "auto" | "torch" | "gsplat")."""
    if backend not in ("auto", "torch", "gsplat"):
        raise InputError(f"backend must be 'auto', 'torch' or 'gsplat', got {backend!r}")
    if backend == "torch":
        return "torch"
    if backend == "gsplat":
        if mode != "gaussian":
            raise InputError(f"backend='gsplat' renders mode='gaussian' only, got mode={mode!r}")
        if not gsplat_available(device):
            raise InputError(f"backend='gsplat' needs a CUDA device and an importable gsplat package "
                             f"(device {str(device)!r}, gsplat importable: {_import_gsplat() is not None})")
        return "gsplat"
    return "gsplat" if mode == "gaussian" and gsplat_available(device) else "torch"


def splat_gsplat(
    means: torch.Tensor,  # (B, N, 3) camera coordinates
    colors: torch.Tensor,  # (B, N, 3)
    sigma: torch.Tensor,  # (B, N) world-space standard deviation
    opacity: torch.Tensor,  # (B, N)
    valid: torch.Tensor,  # (B, N) bool
    K: torch.Tensor,  # (B, 3, 3)
    height: int,
    width: int,
    *,
    near_plane: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rasterize isotropic Gaussians with `gsplat.rasterization`, one frame at a time.

    Means are already in camera space, so the view matrix is the identity; `eps2d = 0` so the footprint
    matches the torch reference. Returns rgb `(B, H, W, 3)` (not over a background), expected depth and
    alpha `(B, H, W)`.
    """
    gsplat = _import_gsplat()
    if gsplat is None:
        raise InputError("gsplat is not importable")
    eye = torch.eye(4, device=means.device)[None]
    rgbs, depths, alphas = [], [], []
    for b in range(means.shape[0]):
        keep = valid[b]
        n = int(keep.sum())
        if n == 0:  # nothing in front of this camera
            rgbs.append(means.new_zeros(height, width, 3))
            depths.append(means.new_zeros(height, width))
            alphas.append(means.new_zeros(height, width))
            continue
        quats = means.new_zeros(n, 4)
        quats[:, 0] = 1.0
        render, alpha, _ = gsplat.rasterization(
            means=means[b][keep], quats=quats, scales=sigma[b][keep, None].expand(n, 3).contiguous(),
            opacities=opacity[b][keep], colors=colors[b][keep], viewmats=eye, Ks=K[b : b + 1],
            width=width, height=height, near_plane=near_plane, eps2d=0.0, packed=False, render_mode="RGB+ED",
        )
        rgbs.append(render[0, ..., :3])
        depths.append(render[0, ..., 3])
        alphas.append(alpha[0, ..., 0])
    return torch.stack(rgbs), torch.stack(depths), torch.stack(alphas)
