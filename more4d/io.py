"""Safe file I/O shared by every module: atomic writes, video read/write, untrusted image decoding."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from more4d.errors import InputError

MAX_IMAGE_PIXELS = 64_000_000  # decompression-bomb guard for user images (about 8000 x 8000)
MIN_IMAGE_SIDE = 16


def check_output_path(path: str | os.PathLike) -> Path:
    """Return `path` as a Path after checking that its folder exists and is writable."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output folder {str(parent)!r} does not exist (for {str(path)!r})")
    if not os.access(parent, os.W_OK):
        raise InputError(f"output folder {str(parent)!r} is not writable (for {str(path)!r})")
    if path.is_dir():
        raise InputError(f"output path {str(path)!r} is a folder, expected a file path")
    return path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Nothing half-written is ever left at `path`: on error the temporary file is removed.

    >>> with atomic_write("out.mp4") as tmp:
    ...     write_something(tmp)
    """
    path = check_output_path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def to_uint8_frames(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Convert frames `(T, H, W, 3)` (uint8, or float in [0, 1]) or `(T, H, W)` masks to uint8 `(T, H, W, 3)`."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim == 3:  # grey / mask video
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames must have shape (T, H, W, 3) or (T, H, W), got {frames.shape}")
    if frames.shape[0] == 0:
        raise InputError("cannot write a video with zero frames")
    if frames.dtype == np.uint8:
        return frames
    if frames.dtype == bool:
        return frames.astype(np.uint8) * 255
    return (np.clip(np.nan_to_num(frames.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_video(path: str | os.PathLike, frames: np.ndarray | torch.Tensor, fps: float = 8.0) -> Path:
    """Write an H.264 mp4 (yuv420p, plays in browsers) atomically. Odd sizes are padded to even."""
    import imageio.v3 as iio

    data = to_uint8_frames(frames)
    pad_h, pad_w = data.shape[1] % 2, data.shape[2] % 2
    if pad_h or pad_w:
        data = np.pad(data, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    if fps <= 0:
        raise InputError(f"fps must be > 0, got {fps}")
    with atomic_write(path) as tmp:
        iio.imwrite(tmp, data, extension=".mp4", fps=fps, codec="libx264", macro_block_size=1,
                    pixelformat="yuv420p")
    return Path(path)


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Read an mp4 into uint8 frames `(T, H, W, 3)` and its fps. Corrupt files raise `InputError`."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise InputError(f"video {str(path)!r} does not exist")
    try:
        frames = iio.imread(path, extension=".mp4")
        meta: dict[str, Any] = iio.immeta(path, extension=".mp4")
    except Exception as exc:  # imageio raises many types for corrupt data
        raise InputError(f"video {str(path)!r} could not be decoded: {exc}") from exc
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise InputError(f"video {str(path)!r} has no frames")
    return np.ascontiguousarray(frames[..., :3]), float(meta.get("fps", 8.0))


def load_image(image: str | os.PathLike | np.ndarray | torch.Tensor | Any) -> torch.Tensor:
    """Decode an untrusted image into RGB float `(H, W, 3)` in [0, 1].

    Accepts a file path, a PIL image, a uint8/float numpy array or tensor `(H, W, 3|4)` or `(H, W)`.
    EXIF orientation is applied, alpha is composited on white, 16-bit and grayscale become RGB.
    Raises `InputError` for unreadable files, images under 16 px a side or over 64 MP.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"image {str(path)!r} does not exist")
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        try:
            with Image.open(path) as im:
                _check_size(im.width, im.height)
                im = ImageOps.exif_transpose(im)
                image = _pil_to_rgb(im)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise InputError(f"image {str(path)!r} could not be read as an image: {exc}") from exc
    elif isinstance(image, Image.Image):
        _check_size(image.width, image.height)
        image = _pil_to_rgb(ImageOps.exif_transpose(image))
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.dtype == object or arr.ndim not in (2, 3):
        raise InputError(f"image must be an array of shape (H, W, 3), got shape {arr.shape}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.shape[-1] == 4:
        alpha = arr[..., 3:4].astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0)
        rgb = arr[..., :3].astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0)
        arr = rgb * alpha + (1.0 - alpha)
    if arr.shape[-1] != 3:
        raise InputError(f"image must have 3 (RGB) or 4 (RGBA) channels, got {arr.shape[-1]}")
    _check_size(arr.shape[1], arr.shape[0])
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / 65535.0
    else:
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise InputError("image contains NaN or infinite values")
        out = np.clip(out, 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(out))


def _check_size(width: int, height: int) -> None:
    if min(width, height) < MIN_IMAGE_SIDE:
        raise InputError(f"image is too small ({width}x{height}); each side must be >= {MIN_IMAGE_SIDE} px")
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(f"image is too large ({width}x{height}); at most {MAX_IMAGE_PIXELS:,} pixels")


def _pil_to_rgb(im: Any) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32)
        return np.clip(arr / (65535.0 if arr.max() > 255 else 255.0), 0.0, 1.0)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        return np.asarray(im.convert("RGBA"))
    return np.asarray(im.convert("RGB"))
