"""Optional fast backends for `render_points`, detected at run time (never a hard import).

gsplat (https://github.com/nerfstudio-project/gsplat, 1.5.x) rasterizes the gaussian mode on CUDA. It is used when
`backend="auto"`, the mode is "gaussian", the tensors are on a CUDA device and gsplat with its CUDA extension loads;
otherwise the pure-PyTorch reference in `splat.py` runs. Install it with `pip install gsplat`: the PyPI wheel builds
its extension with nvcc on first use (minutes, cached under torch's extension folder), so the first availability
check on a CUDA device can take that long.

Expected differences from the reference (same projection, conic and alpha rules): gsplat draws every pixel whose
alpha reaches 1/255, while the reference stops at a square window of round(3 sigma) pixels around the pixel the
centre falls in (so it can drop fringe pixels with alpha below ~0.011) and truncates windows at
`splat.MAX_FOOTPRINT_PX`; gsplat evaluates `exp` in fast math and accumulates transmittance as a product instead of
a float64 log-sum.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

import torch

from more4d.errors import InputError


@functools.cache
def _import_gsplat() -> ModuleType | None:
    """gsplat once its CUDA extension has loaded, else None.

    `import gsplat` alone succeeds without a usable extension (it is built lazily on the first rasterization, and
    is None when no CUDA toolkit is found), so the extension is loaded here: "auto" must not pick a backend that
    fails mid-render.
    """
    try:
        gsplat = importlib.import_module("gsplat")
        extension = importlib.import_module("gsplat.cuda._backend")._C
    except Exception:  # not installed, or its CUDA extension cannot be built or loaded: fall back to torch
        return None
    return gsplat if extension is not None else None


def gsplat_available(device: torch.device | str) -> bool:
    """True when gsplat can rasterize on `device` (a CUDA device and gsplat with a loadable CUDA extension)."""
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
            on_cuda = torch.device(device).type == "cuda" and torch.cuda.is_available()
            why = "gsplat or its CUDA extension does not load" if on_cuda else f"{str(device)!r} is not a CUDA device"
            raise InputError(f"backend='gsplat' needs a CUDA device and gsplat with its CUDA extension: {why}")
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
    """Rasterize isotropic Gaussians with one batched `gsplat.rasterization` call (frames as a batch dimension).

    Means are already in each frame's camera space, so every view matrix is the identity; invalid points are moved
    behind the camera, where gsplat's near-plane test drops them. `eps2d = 0` and the classic (non-antialiased)
    mode keep the footprint and opacity of the torch reference. Returns rgb `(B, H, W, 3)` (not over a
    background), expected depth and alpha `(B, H, W)`.
    """
    gsplat = _import_gsplat()
    if gsplat is None:
        raise InputError("gsplat with its CUDA extension is not available")
    batch, n = means.shape[:2]
    behind = means.new_tensor([0.0, 0.0, -1.0])
    quats = means.new_zeros(batch, n, 4)
    quats[..., 0] = 1.0  # identity rotation (w, x, y, z)
    render, alpha, _ = gsplat.rasterization(
        means=torch.where(valid[..., None], means, behind).contiguous(),
        quats=quats,
        scales=sigma[..., None].expand(batch, n, 3).contiguous(),
        opacities=opacity.contiguous(),
        colors=colors.contiguous(),
        viewmats=torch.eye(4, device=means.device).expand(batch, 1, 4, 4).contiguous(),
        Ks=K[:, None].contiguous(),
        width=width,
        height=height,
        near_plane=near_plane,
        eps2d=0.0,
        packed=False,
        rasterize_mode="classic",
        render_mode="RGB+ED",
    )  # render (B, 1, H, W, 4): rgb and expected depth; alpha (B, 1, H, W, 1)
    return render[:, 0, ..., :3], render[:, 0, ..., 3], alpha[:, 0, ..., 0]
