"""The authors' TrajScene track layout, read safely and converted to more4d's `TrajClip` conventions.

Per clip a pickle `<name>_dt3d_pred.pkl` holds a dict of torch tensors: `coords` `(T, H*W, 3)` or
`(1, T, H*W, 3)` camera-space points of every first-frame pixel (z = depth), `colors` `(H*W, 3)` 0-255,
optionally `vis` `(T, H*W)`, beside the mp4 and caption files (docs/method.md, "TrajScene data").

**Pickles are untrusted input.** `safe_load_pickle` / `safe_loads_pickle` use a restricted unpickler that
resolves only the torch and numpy tensor/array rebuild functions, torch dtypes and builtin containers; anything
else (`os.system`, `builtins.eval`, arbitrary classes) raises `InputError` naming the pickle before it runs.
Nested torch storages are loaded with `torch.load(weights_only=True)`; zip-format files written by `torch.save`
go through `torch.load(weights_only=True)` directly. The result is then checked to contain only tensors,
arrays, containers and plain scalars.

**Conventions** are converted in one place, `seed_clip`, which both the loose-file reader (`read_seed_clip`)
and the TrajScene-60K archives (`more4d.data.trajscene60k`) use:

- units: kept as stored. The authors do not state them (their depth model's scale; their loaders skip clips
  with coordinates beyond 500, and so does `seed_clip`). The motion normalisation is scale-free, so training is
  unaffected; metric errors on this data are in the data's units.
- camera: OpenCV axes, the source camera of each frame (no camera pose is released, so c2w is the identity and
  any camera motion is part of the tracks). K is fitted to the frame-0 points, which are the back-projections
  of the pixel grid: pixel (i, j) has its centre at (j + 0.5, i + 0.5) and u = fx x / z + cx. An axis whose
  fitted focal is negative is flipped to OpenCV's. When the frame-0 points are not a pinhole back-projection
  (fit error above `K_FIT_MAX_RMS_PX`), K falls back to the seed's pseudo-intrinsics (fx = 24/23 W, fy = H,
  centred), whose motion alphas are `SEED_MOTION_ALPHAS`. To normalise motion as the authors' loaders do
  whatever K is, use `motion_alphas(K, size, seed_compat=True)`.
- depth: frame 0 is the frame-0 points' z (they are the back-projected depth map); later frames 0 (unknown).
- frames: track frame t is video frame t * stride; stride 2 when the video has more frames than the tracks
  (the authors read their source videos at stride 2), else 1 (the released 49-frame videos are at the track
  rate); short videos are padded with their last frame. The video is mapped onto the track grid by the one of
  "stretch" (whole frame resized) and "crop" (centre crop to the grid's aspect, then resized) whose frame 0
  matches the tracks' colours best (`frame_fit="auto"`), or by the one named; a video that matches neither
  (mean colour error above `MAX_FRAME_FIT_ERROR`) is refused.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from more4d.data.formats import TrajClip
from more4d.errors import InputError
from more4d.geometry import DEPTH_EPS, SEED_MOTION_ALPHAS, resize_intrinsics, valid_depth_mask
from more4d.io import read_video

MAX_PICKLE_BYTES = 8 << 30
SEED_FX, SEED_FY = SEED_MOTION_ALPHAS  # the seed's pseudo-focals in units of width / height (normalize_track_z)
SEED_MAX_ABS_COORD = 500.0  # the authors' loaders skip clips with coordinates beyond this
K_FIT_MAX_RMS_PX = 1.0  # frame-0 points further than this from their pixel centres are not a back-projection
MAX_FRAME_FIT_ERROR = 0.2  # mean |frame 0 - colors| in [0, 1] above which a video does not belong to its tracks
FrameFit = Literal["auto", "stretch", "crop"]


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


class UnsafePickleError(InputError):
    """A pickle that names something other than tensors, arrays and containers: refused, never skipped."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], label: str) -> None:
        super().__init__(file)
        self.label = label

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _TORCH_DTYPES:
            return getattr(torch, name)
        if module == "numpy.dtypes" and name in _NUMPY_DTYPE_CLASSES:
            return getattr(np.dtypes, name)
        raise UnsafePickleError(f"track pickle {self.label} refers to {module}.{name}, which is not a tensor, array or "
                         "container; refusing to load it")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"track pickle {self.label} uses persistent ids (not a plain pickle of tensors); "
                         "refusing to load it")


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Load an untrusted pickle file of tensors/arrays/containers; anything else raises `InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"track pickle {str(path)!r} does not exist")
    if path.stat().st_size > MAX_PICKLE_BYTES:
        raise InputError(f"track pickle {str(path)!r} is larger than {MAX_PICKLE_BYTES >> 30} GiB")
    with open(path, "rb") as f:
        return _load(f, repr(str(path)))


def safe_loads_pickle(data: bytes, label: str) -> Any:
    """`safe_load_pickle` for bytes in memory (an archive member); `label` names them in errors."""
    if len(data) > MAX_PICKLE_BYTES:
        raise InputError(f"track pickle {label} is larger than {MAX_PICKLE_BYTES >> 30} GiB")
    return _load(io.BytesIO(data), label)


def _load(f: IO[bytes], label: str) -> Any:
    try:
        if zipfile.is_zipfile(f):  # torch.save format
            f.seek(0)
            obj = torch.load(f, map_location="cpu", weights_only=True)
        else:
            f.seek(0)
            obj = _RestrictedUnpickler(f, label).load()
    except InputError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, RuntimeError, OSError,
            IndexError, KeyError, MemoryError) as exc:
        raise InputError(f"track pickle {label} is corrupt or not a pickle of tensors: {exc}") from exc
    _check_plain(obj, label)
    return obj


def _check_plain(obj: Any, label: str, depth: int = 0) -> None:
    if depth > 8:
        raise InputError(f"track pickle {label} is nested too deeply")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, label, depth + 1)
            _check_plain(v, label, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            _check_plain(v, label, depth + 1)
    elif not isinstance(obj, (torch.Tensor, np.ndarray, np.generic, str, bytes, int, float, bool, type(None))):
        raise UnsafePickleError(f"track pickle {label} holds a {type(obj).__name__}, expected tensors and "
                                "containers")


def _as_tensor(value: Any, name: str, label: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise InputError(f"track pickle {label}: {name!r} must be a tensor or array, got {type(value).__name__}")
    return value


def parse_tracks(data: Any, label: str, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check an unpickled track dict; returns coords `(T, N, 3)` float32, colors `(N, 3)` in [0, 1] and
    vis `(T, N)` bool (z > 0 where the pickle has no `vis`), N = height * width."""
    if not isinstance(data, dict) or "coords" not in data or "colors" not in data:
        raise InputError(f"track pickle {label} must be a dict with 'coords' and 'colors'")
    N = height * width
    coords = _as_tensor(data["coords"], "coords", label).float()
    if coords.ndim == 4 and coords.shape[0] == 1:
        coords = coords[0]
    if coords.ndim != 3 or coords.shape[1:] != (N, 3):
        raise InputError(f"track pickle {label}: coords must be (T, {N}, 3) for a {height}x{width} grid, "
                         f"got {tuple(coords.shape)}")
    if not torch.isfinite(coords).all():
        raise InputError(f"track pickle {label}: coords contain NaN or inf")
    if coords.abs().max() > SEED_MAX_ABS_COORD:
        raise InputError(f"track pickle {label}: coords reach {float(coords.abs().max()):.4g}, beyond "
                         f"{SEED_MAX_ABS_COORD:g} (the authors' loaders skip such clips)")
    colors = _as_tensor(data["colors"], "colors", label).float()
    if colors.ndim == 3 and colors.shape[0] == 1:
        colors = colors[0]
    if colors.shape != (N, 3):
        raise InputError(f"track pickle {label}: colors must be ({N}, 3), got {tuple(colors.shape)}")
    colors = (colors / 255.0 if colors.max() > 1.0 else colors).clamp(0, 1)
    T = coords.shape[0]
    if "vis" in data:
        vis = _as_tensor(data["vis"], "vis", label).reshape(-1, N)[-T:].bool()
        if vis.shape != (T, N):
            raise InputError(f"track pickle {label}: vis must be ({T}, {N}), got {tuple(vis.shape)}")
    else:
        vis = coords[..., 2] > 0
    return coords, colors, vis


def fit_intrinsics(points0: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, float]:
    """Least-squares pinhole K `(3, 3)` for frame-0 points `(H*W, 3)` of a row-major pixel grid, and the rms
    distance (pixels) of their projections from the pixel centres; inf when under 2 rows and columns are valid.

    Focals come out negative for axes that point against OpenCV's (x right, y down)."""
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                          torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    p = points0.double()
    ok = torch.isfinite(p).all(-1) & (p[:, 2] > DEPTH_EPS)
    K = torch.eye(3, dtype=torch.float64)
    squares = []
    for axis, pix in ((0, u.reshape(-1)), (1, v.reshape(-1))):
        x, target = p[ok, axis] / p[ok, 2], pix[ok]
        if target.unique().numel() < 2:
            return K.float(), float("inf")
        A = torch.stack([x, torch.ones_like(x)], dim=1)
        f, c = torch.linalg.lstsq(A, target[:, None]).solution[:, 0]
        K[axis, axis], K[axis, 2] = f, c
        squares.append((f * x + c - target) ** 2)
    return K.float(), float((squares[0] + squares[1]).mean().sqrt())


def map_frames(frames: np.ndarray, num_track_frames: int, height: int, width: int,
               colors: torch.Tensor | None = None, fit: FrameFit = "auto",
               label: str = "video") -> tuple[torch.Tensor, dict[str, Any]]:
    """Video frames `(F, h, w, 3)` uint8 -> the track grid `(T, height, width, 3)` uint8 (module docstring:
    stride, padding and "stretch" / "crop"); returns the frames and {frame_stride, frame_fit, frame_fit_error}.

    `fit="auto"` needs the tracks' `colors` `(H*W, 3)` in [0, 1] to choose."""
    T = num_track_frames
    stride = 2 if len(frames) > T else 1
    picked = frames[::stride][:T]
    if len(picked) < T:
        picked = np.concatenate([picked, np.repeat(picked[-1:], T - len(picked), 0)])
    video = torch.from_numpy(np.ascontiguousarray(picked)).permute(0, 3, 1, 2)  # (T, 3, h, w)
    h, w = video.shape[-2:]
    boxes = {"stretch": (0, 0, h, w), "crop": centre_crop((h, w), (height, width))}
    if fit not in ("auto", *boxes) or (fit == "auto" and colors is None):
        raise InputError(f"frame_fit must be stretch or crop, or auto with the tracks' colours, got {fit!r}")
    names = list(boxes) if fit == "auto" else [fit]
    errors = {}
    if colors is not None:
        target = colors.view(height, width, 3).permute(2, 0, 1)
        errors = {n: float((resize_frames(video[:1], boxes[n], (height, width))[0].float() / 255 - target).abs().mean())
                  for n in names}
        names = [min(errors, key=errors.__getitem__)]  # "stretch" first: it wins ties (same aspect)
        if errors[names[0]] > MAX_FRAME_FIT_ERROR:
            raise InputError(f"{label}: frame 0 differs from the tracks' colours by {errors[names[0]]:.3f} on "
                             f"average (above {MAX_FRAME_FIT_ERROR}) however it is fitted: not this clip's video")
    out = resize_frames(video, boxes[names[0]], (height, width)).permute(0, 2, 3, 1).contiguous()
    return out, {"frame_stride": stride, "frame_fit": names[0], "frame_fit_error": errors.get(names[0])}


def centre_crop(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The centred crop `(top, left, height, width)` of `src_hw` with the aspect ratio of `dst_hw`."""
    (sh, sw), (dh, dw) = src_hw, dst_hw
    if sw * dh > sh * dw:
        ch, cw = sh, max(1, min(sw, round(sh * dw / dh)))
    else:
        ch, cw = max(1, min(sh, round(sw * dh / dw))), sw
    return (sh - ch) // 2, (sw - cw) // 2, ch, cw


def resize_frames(video: torch.Tensor, box: tuple[int, int, int, int], size: tuple[int, int]) -> torch.Tensor:
    """Crop `box = (top, left, h, w)` of uint8 `(T, 3, H, W)` and resize it (antialiased bilinear) to `size`."""
    top, left, h, w = box
    x = video[..., top:top + h, left:left + w]
    if tuple(x.shape[-2:]) == tuple(size):
        return x.contiguous()
    y = F.interpolate(x.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8)


def fit_clip(clip: TrajClip, size: tuple[int, int]) -> TrajClip:
    """`clip` centre-cropped to the aspect of `size = (H, W)` and resized to it: frames antialiased; points,
    visibility and colours nearest (each pixel keeps the track of the grid pixel under its centre); K follows."""
    size = (int(size[0]), int(size[1]))
    if (clip.height, clip.width) == size:
        return clip
    box = centre_crop((clip.height, clip.width), size)
    idx = nearest_indices(box, size, clip.width)
    frames = resize_frames(clip.frames.permute(0, 3, 1, 2), box, size).permute(0, 2, 3, 1).contiguous()
    out = TrajClip(frames=frames, points=clip.points[:, idx].contiguous(), visibility=clip.visibility[:, idx].contiguous(),
                   colors=clip.colors[idx].contiguous(), K=resize_intrinsics(clip.K, (clip.height, clip.width), size, box),
                   depth=None if clip.depth is None else clip.depth.flatten(1)[:, idx].view(-1, *size),
                   caption=clip.caption, fps=clip.fps, meta={**clip.meta, "crop": list(box)})
    out.validate()
    return out


def nearest_indices(box: tuple[int, int, int, int], size: tuple[int, int], width: int) -> torch.Tensor:
    """Row-major indices into a grid `width` wide of the pixels under the centres of `size` laid over `box`."""
    top, left, h, w = box
    rows = top + ((torch.arange(size[0]) + 0.5) * h / size[0]).long()
    cols = left + ((torch.arange(size[1]) + 0.5) * w / size[1]).long()
    return (rows[:, None] * width + cols[None, :]).reshape(-1)


def seed_clip(data: Any, frames: np.ndarray | None, *, label: str, height: int, width: int, caption: str = "",
              fps: float = 8.0, num_frames: int | None = None, frame_fit: FrameFit = "auto",
              meta: dict[str, Any] | None = None) -> TrajClip:
    """The one conversion of the authors' track layout to a `TrajClip` (module docstring, "Conventions").

    Args:
        data: the unpickled track dict (`safe_load_pickle`).
        frames: the clip's video `(F, h, w, 3)` uint8, or None to paint every frame from `colors`.
        label: names the clip in errors (a path, or an archive and member).
        height, width: the track grid (row-major, N = height * width).
        num_frames: keep this many frames (the authors keep 49, padding with the last); None keeps all.
        frame_fit: how the video maps onto the grid: "auto", "stretch" or "crop".
        meta: extra JSON-serialisable entries for `clip.meta`.

    Raises:
        InputError: a malformed dict, non-finite or out-of-range coordinates, a video that is not the clip's.
    """
    coords, colors, vis = parse_tracks(data, label, height, width)
    K, rms = fit_intrinsics(coords[0], height, width)
    if rms <= K_FIT_MAX_RMS_PX:
        flipped = [name for axis, name in ((0, "x"), (1, "y")) if K[axis, axis] < 0]
        if flipped:  # an axis against OpenCV's: flip the points, not the camera
            coords = coords * torch.tensor([-1.0 if name in flipped else 1.0 for name in ("x", "y", "z")])
            K[0, 0], K[1, 1] = K[0, 0].abs(), K[1, 1].abs()
        camera = {"K_source": "fit to the frame-0 points", "K_fit_rms_px": rms, "flipped_axes": flipped}
    else:
        K = torch.tensor([[SEED_FX * width, 0, width / 2], [0, SEED_FY * height, height / 2], [0, 0, 1]])
        camera = {"K_source": "the seed's pseudo-intrinsics", "K_fit_rms_px": rms, "flipped_axes": []}
    T = coords.shape[0]
    if frames is not None:
        video, framing = map_frames(frames, T, height, width, colors, frame_fit, label)
    else:
        video = (colors.view(1, height, width, 3) * 255 + 0.5).to(torch.uint8).expand(T, -1, -1, -1).contiguous()
        framing = {"frame_stride": None, "frame_fit": None, "frame_fit_error": None}
    if num_frames is not None:
        idx = torch.arange(num_frames).clamp(max=T - 1)
        coords, vis, video = coords[idx], vis[idx], video[idx]
    depth = torch.zeros(coords.shape[0], height, width)
    depth[0] = torch.where(valid_depth_mask(coords[0, :, 2]), coords[0, :, 2], 0.0).view(height, width)
    clip = TrajClip(frames=video, points=coords.contiguous(), visibility=vis.contiguous(), colors=colors, K=K,
                    depth=depth, caption=caption, fps=fps,
                    meta={"source": "trajscene", "label": label, "units": "unknown", "track_frames": T, **camera,
                          **framing, **(meta or {})})
    clip.validate()
    return clip


def read_seed_clip(pkl: str | os.PathLike, video: str | os.PathLike | None = None, caption: str = "", *,
                   height: int = 384, width: int = 512, num_frames: int | None = None,
                   frame_fit: FrameFit = "auto") -> TrajClip:
    """Read one clip of the authors' loose-file layout as a `TrajClip` (conventions: `seed_clip`).

    Args:
        pkl: the `_dt3d_pred.pkl` track pickle (untrusted; see the module docstring).
        video: the clip's mp4, mapped onto the track grid; without it, frames are painted from `colors`
            (frame 0 only is meaningful).
        caption: the clip's caption.
        height, width: the track grid (the authors' is 384 x 512, row-major).
        num_frames: keep this many frames (the authors keep 49, padding with the last); None keeps all.
        frame_fit: how the video maps onto the grid ("auto", "stretch", "crop").
    """
    path = Path(pkl)
    frames, fps = read_video(video) if video is not None else (None, 8.0)
    return seed_clip(safe_load_pickle(path), frames, label=repr(str(path)), height=height, width=width,
                     caption=caption, fps=fps, num_frames=num_frames, frame_fit=frame_fit,
                     meta={"pickle": path.name})
