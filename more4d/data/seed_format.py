"""Reader for the authors' released TrajScene layout (docs/method.md, "TrajScene data").

Per clip a pickle `<name>_dt3d_pred.pkl` holds a dict of torch tensors: `coords` `(T, H*W, 3)` or
`(1, T, H*W, 3)` camera-space points (z = depth), `colors` `(H*W, 3)` 0-255, optionally `vis` `(T, H*W)`,
beside the mp4 and caption files.

**Pickles are untrusted input.** `safe_load_pickle` uses a restricted unpickler that resolves only the torch
and numpy tensor/array rebuild functions, torch dtypes and builtin containers; anything else (`os.system`,
`builtins.eval`, arbitrary classes) raises `InputError` before it runs. Nested torch storages are loaded with
`torch.load(weights_only=True)`; zip-format files written by `torch.save` go through
`torch.load(weights_only=True)` directly. The result is then checked to contain only tensors, arrays,
containers and plain scalars.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from more4d.data.formats import MAX_ABS_COORD, TrajClip
from more4d.errors import InputError
from more4d.geometry import SEED_MOTION_ALPHAS
from more4d.io import read_video

MAX_PICKLE_BYTES = 8 << 30
SEED_FX, SEED_FY = SEED_MOTION_ALPHAS  # the seed's pseudo-focals in units of width / height (normalize_track_z)


def _load_storage_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,  # the stock one calls torch.load(weights_only=False)
    ("torch", "Size"): torch.Size,
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = np._core.multiarray._reconstruct
    _ALLOWED[(_mod, "scalar")] = np._core.multiarray.scalar
_TORCH_DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}
_NUMPY_DTYPE_CLASSES = {name for name in dir(np.dtypes) if name.endswith("DType")}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _TORCH_DTYPES:
            return getattr(torch, name)
        if module == "numpy.dtypes" and name in _NUMPY_DTYPE_CLASSES:
            return getattr(np.dtypes, name)
        raise InputError(f"pickle refers to {module}.{name}, which is not a tensor, array or container; "
                         "refusing to load it")

    def persistent_load(self, pid: Any) -> Any:
        raise InputError("pickle uses persistent ids (not a plain pickle of tensors); refusing to load it")


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Load an untrusted pickle of tensors/arrays/containers; anything else raises `InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"track pickle {str(path)!r} does not exist")
    if path.stat().st_size > MAX_PICKLE_BYTES:
        raise InputError(f"track pickle {str(path)!r} is larger than {MAX_PICKLE_BYTES >> 30} GiB")
    try:
        if zipfile.is_zipfile(path):  # torch.save format
            obj = torch.load(path, map_location="cpu", weights_only=True)
        else:
            with open(path, "rb") as f:
                obj = _RestrictedUnpickler(f).load()
    except InputError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, RuntimeError, OSError,
            IndexError, KeyError, MemoryError) as exc:
        raise InputError(f"track pickle {str(path)!r} is corrupt or not a pickle of tensors: {exc}") from exc
    _check_plain(obj, path)
    return obj


def _check_plain(obj: Any, path: Path, depth: int = 0) -> None:
    if depth > 8:
        raise InputError(f"track pickle {str(path)!r} is nested too deeply")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, path, depth + 1)
            _check_plain(v, path, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            _check_plain(v, path, depth + 1)
    elif not isinstance(obj, (torch.Tensor, np.ndarray, np.generic, str, bytes, int, float, bool, type(None))):
        raise InputError(f"track pickle {str(path)!r} holds a {type(obj).__name__}, expected tensors and containers")


def _as_tensor(value: Any, name: str, path: Path) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise InputError(f"track pickle {str(path)!r}: {name!r} must be a tensor or array, got {type(value).__name__}")
    return value


def read_seed_clip(pkl: str | os.PathLike, video: str | os.PathLike | None = None, caption: str = "", *,
                   height: int = 384, width: int = 512, num_frames: int | None = None,
                   frame_stride: int = 1) -> TrajClip:
    """Read one clip of the authors' layout as a `TrajClip`.

    Args:
        pkl: the `_dt3d_pred.pkl` track pickle (untrusted; see the module docstring).
        video: the clip's mp4; its frames are resized to the track grid `(height, width)` when they differ.
            Without a video, frames are painted from `colors` (frame 0 only is meaningful).
        height, width: the track grid (the seed uses 384 x 512, row-major).
        num_frames: keep this many frames (the seed uses 49, padding with the last); None keeps all.
        frame_stride: take every k-th video frame (the seed reads RGB at stride 2).

    K is the seed's pseudo-intrinsics scaled to pixels (fx = 24/23 W, fy = 1.0 H, principal point at the
    centre): the seed's track units are not stated. Points beyond 1e4 or non-finite raise `InputError`.
    """
    path = Path(pkl)
    data = safe_load_pickle(path)
    if not isinstance(data, dict) or "coords" not in data or "colors" not in data:
        raise InputError(f"track pickle {str(path)!r} must be a dict with 'coords' and 'colors'")
    N = height * width
    coords = _as_tensor(data["coords"], "coords", path).float()
    if coords.ndim == 4 and coords.shape[0] == 1:
        coords = coords[0]
    if coords.ndim != 3 or coords.shape[1:] != (N, 3):
        raise InputError(f"track pickle {str(path)!r}: coords must be (T, {N}, 3) for a {height}x{width} grid, "
                         f"got {tuple(coords.shape)}")
    if not torch.isfinite(coords).all() or coords.abs().max() > MAX_ABS_COORD:
        raise InputError(f"track pickle {str(path)!r}: coords contain NaN, inf or values beyond 1e4")
    colors = _as_tensor(data["colors"], "colors", path).float()
    if colors.ndim == 3 and colors.shape[0] == 1:
        colors = colors[0]
    if colors.shape != (N, 3):
        raise InputError(f"track pickle {str(path)!r}: colors must be ({N}, 3), got {tuple(colors.shape)}")
    colors = (colors / 255.0 if colors.max() > 1.0 else colors).clamp(0, 1)
    T = coords.shape[0]
    if "vis" in data:
        vis = _as_tensor(data["vis"], "vis", path).reshape(-1, N)[-T:].bool()
        if vis.shape != (T, N):
            raise InputError(f"track pickle {str(path)!r}: vis must be ({T}, {N}), got {tuple(vis.shape)}")
    else:
        vis = coords[..., 2] > 0
    if num_frames is not None:
        idx = torch.arange(num_frames).clamp(max=T - 1)
        coords, vis, T = coords[idx], vis[idx], num_frames
    if video is not None:
        frames = _frames_for(Path(video), T, frame_stride, height, width)
    else:
        frames = (colors.view(1, height, width, 3) * 255 + 0.5).to(torch.uint8).expand(T, -1, -1, -1).contiguous()
    K = torch.tensor([[SEED_FX * width, 0, width / 2], [0, SEED_FY * height, height / 2], [0, 0, 1]])
    clip = TrajClip(frames=frames, points=coords.contiguous(), visibility=vis.contiguous(), colors=colors, K=K,
                    depth=None, caption=caption, fps=8.0,
                    meta={"source": "seed", "pickle": path.name, "units": "unknown"})
    clip.validate()
    return clip


def _frames_for(video: Path, T: int, stride: int, height: int, width: int) -> torch.Tensor:
    frames, _ = read_video(video)
    frames = frames[::max(1, stride)]
    if len(frames) < T:  # the seed pads short videos with the last frame
        frames = np.concatenate([frames, np.repeat(frames[-1:], T - len(frames), 0)])
    out = torch.from_numpy(frames[:T])
    if out.shape[1:3] != (height, width):
        out = torch.nn.functional.interpolate(out.permute(0, 3, 1, 2).float(), size=(height, width),
                                              mode="bilinear", antialias=True, align_corners=False)
        out = out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return out
