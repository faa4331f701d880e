"""The more4d TrajScene clip layout: one folder per clip, pickle-free, written atomically.

    <clip>/video.mp4             RGB frames (H.264)
    <clip>/tracks.safetensors    points (T, N, 3) f32, visibility (T, N) bool, colors (N, 3) f32, K (3, 3) f32,
                                 depth (T, H, W) f32 (optional)
    <clip>/meta.json             format, version, caption, fps, sizes, meta (motion types, seed, source, camera)
    <clip>/novel/<i>/video.mp4   the same clip seen from a novel camera path (optional)
    <clip>/novel/<i>/cameras.json  {"convention": "opencv_c2w", "c2w": (T, 4, 4), "K": (3, 3), "fps"}

Points are camera-0 OpenCV coordinates of every frame-0 pixel (row-major, N = H * W).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from more4d.errors import InputError
from more4d.io import read_video, write_video

FORMAT = "more4d-trajclip"
VERSION = 1
MAX_ABS_COORD = 1e4  # coordinates beyond this are treated as corrupt


@dataclass
class NovelView:
    """A render of the clip from another camera: c2w `(T, 4, 4)` opencv_c2w in the camera-0 frame,
    K `(3, 3)`, frames uint8 `(T, H, W, 3)`."""

    c2w: torch.Tensor
    K: torch.Tensor
    frames: torch.Tensor


@dataclass
class TrajClip:
    """A video with dense 3D tracks of its frame-0 pixels.

    frames: `(T, H, W, 3)` uint8; points: `(T, N, 3)` float32 camera-0 coords, N = H * W row-major;
    visibility: `(T, N)` bool; colors: `(N, 3)` float32 in [0, 1]; K: `(3, 3)` float32 pixels;
    depth: `(T, H, W)` float32 z-depth per frame (0 = unknown) or None; meta: JSON-serialisable
    (source, seed, per-object motion types, `camera_c2w` `(T, 4, 4)` when known).
    """

    frames: torch.Tensor
    points: torch.Tensor
    visibility: torch.Tensor
    colors: torch.Tensor
    K: torch.Tensor
    depth: torch.Tensor | None = None
    caption: str = ""
    fps: float = 8.0
    meta: dict[str, Any] = field(default_factory=dict)
    novel: list[NovelView] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    def validate(self) -> None:
        """Raise `InputError` if shapes disagree or coordinates are non-finite."""
        T, H, W = self.num_frames, self.height, self.width
        N = H * W
        expect = {"frames": (self.frames, (T, H, W, 3)), "points": (self.points, (T, N, 3)),
                  "visibility": (self.visibility, (T, N)), "colors": (self.colors, (N, 3)), "K": (self.K, (3, 3))}
        if self.depth is not None:
            expect["depth"] = (self.depth, (T, H, W))
        for name, (value, shape) in expect.items():
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise InputError(f"clip {name} must have shape {shape} for a {T}x{H}x{W} video, got {got}")
        if self.frames.dtype != torch.uint8 or self.visibility.dtype != torch.bool:
            raise InputError(f"clip frames must be uint8 and visibility bool, got {self.frames.dtype}, "
                             f"{self.visibility.dtype}")
        if not torch.isfinite(self.points).all() or self.points.abs().max() > MAX_ABS_COORD:
            raise InputError("clip points contain NaN, inf or coordinates beyond 1e4")
        if not torch.isfinite(self.K).all() or self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise InputError(f"clip K must be finite with positive focals, got {self.K.tolist()}")
        if self.depth is not None and not torch.isfinite(self.depth).all():
            raise InputError("clip depth contains NaN or inf")
        for i, view in enumerate(self.novel):
            if tuple(view.frames.shape) != (T, H, W, 3) or tuple(view.c2w.shape) != (T, 4, 4):
                raise InputError(f"novel view {i} must have frames {(T, H, W, 3)} and c2w {(T, 4, 4)}, got "
                                 f"{tuple(view.frames.shape)} and {tuple(view.c2w.shape)}")


def write_clip(clip: TrajClip, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write `clip` as a more4d clip folder at `path`, atomically (a temp folder renamed into place)."""
    clip.validate()
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"clip folder {str(path)!r} already exists (pass overwrite=True to replace it)")
    if not path.parent.is_dir():
        raise InputError(f"output folder {str(path.parent)!r} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700 folders
    try:
        _write_contents(clip, tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "clip")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _write_contents(clip: TrajClip, folder: Path) -> None:
    from safetensors.torch import save_file

    write_video(folder / "video.mp4", clip.frames, fps=clip.fps)
    tensors = {"points": clip.points.float(), "visibility": clip.visibility, "colors": clip.colors.float(),
               "K": clip.K.float()}
    if clip.depth is not None:
        tensors["depth"] = clip.depth.float()
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / "tracks.safetensors"),
              metadata={"format": FORMAT, "version": str(VERSION)})
    for i, view in enumerate(clip.novel):
        sub = folder / "novel" / str(i)
        sub.mkdir(parents=True)
        write_video(sub / "video.mp4", view.frames, fps=clip.fps)
        cameras = {"convention": "opencv_c2w", "c2w": view.c2w.tolist(), "K": view.K.tolist(), "fps": clip.fps}
        (sub / "cameras.json").write_text(json.dumps(cameras))
    header = {"format": FORMAT, "version": VERSION, "caption": clip.caption, "fps": clip.fps,
              "num_frames": clip.num_frames, "height": clip.height, "width": clip.width,
              "novel_views": len(clip.novel), "meta": clip.meta}
    (folder / "meta.json").write_text(json.dumps(header, indent=1))


def read_clip_header(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a clip folder's `meta.json` (cheap: no video or tracks are decoded)."""
    path = Path(path)
    try:
        header = json.loads((path / "meta.json").read_text())
    except FileNotFoundError:
        raise InputError(f"{str(path)!r} is not a more4d clip folder (no meta.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"clip {str(path)!r} has an unreadable meta.json: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InputError(f"clip {str(path)!r}: meta.json is not a {FORMAT} header")
    if header.get("version", 0) > VERSION:
        raise InputError(f"clip {str(path)!r} has format version {header['version']}; this more4d reads <= {VERSION}")
    return header


def read_clip(path: str | os.PathLike, *, novel: bool = True, depth: bool = True) -> TrajClip:
    """Read a clip folder written by `write_clip`; corrupt or inconsistent files raise `InputError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    header = read_clip_header(path)
    frames, _ = read_video(path / "video.mp4")
    try:
        tensors = load_file(str(path / "tracks.safetensors"))
    except FileNotFoundError:
        raise InputError(f"clip {str(path)!r} has no tracks.safetensors") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"clip {str(path)!r}: tracks.safetensors is corrupt: {exc}") from exc
    missing = {"points", "visibility", "colors", "K"} - set(tensors)
    if missing:
        raise InputError(f"clip {str(path)!r}: tracks.safetensors lacks {sorted(missing)}")
    views = []
    for i in range(int(header.get("novel_views", 0)) if novel else 0):
        sub = path / "novel" / str(i)
        view_frames, _ = read_video(sub / "video.mp4")
        try:
            cams = json.loads((sub / "cameras.json").read_text())
            c2w, K = torch.tensor(cams["c2w"], dtype=torch.float32), torch.tensor(cams["K"], dtype=torch.float32)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"clip {str(path)!r}: novel view {i} has unreadable cameras.json: {exc}") from exc
        views.append(NovelView(c2w=c2w, K=K, frames=torch.from_numpy(view_frames)))
    clip = TrajClip(frames=torch.from_numpy(frames), points=tensors["points"].float(),
                    visibility=tensors["visibility"].bool(), colors=tensors["colors"].float(), K=tensors["K"].float(),
                    depth=tensors.get("depth") if depth else None, caption=str(header.get("caption", "")),
                    fps=float(header.get("fps", 8.0)), meta=dict(header.get("meta", {})), novel=views)
    clip.validate()
    return clip


def clip_from_arrays(frames: np.ndarray, points: np.ndarray, visibility: np.ndarray, colors: np.ndarray,
                     K: np.ndarray, **kwargs: Any) -> TrajClip:
    """Build and validate a `TrajClip` from numpy arrays or tensors (colors in [0, 1] or 0-255)."""
    colors_t = torch.as_tensor(np.asarray(colors), dtype=torch.float32)
    if colors_t.numel() and colors_t.max() > 1.0:
        colors_t = colors_t / 255.0
    clip = TrajClip(frames=torch.as_tensor(np.asarray(frames)), points=torch.as_tensor(np.asarray(points)).float(),
                    visibility=torch.as_tensor(np.asarray(visibility)).bool(), colors=colors_t.clamp(0, 1),
                    K=torch.as_tensor(np.asarray(K)).float(), **kwargs)
    clip.validate()
    return clip
