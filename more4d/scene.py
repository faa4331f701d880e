"""Scene4D: dense 3D tracks of the pixels of frame 0, and its pickle-free file format.

A scene file is one `.safetensors` file: tensors `points`, `colors`, `visibility`, and in its metadata
one JSON header under the key "more4d":
`{"format": "more4d.scene4d", "version": 1, "K": [[...]], "image_size": [H, W], "fps", "prompt", "metadata"}`.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from more4d.errors import InputError
from more4d.geometry import DEPTH_EPS
from more4d.io import atomic_write

SCENE_FORMAT = "more4d.scene4d"
SCENE_VERSION = 1
_HEADER_KEY = "more4d"


@dataclass
class Scene4D:
    """Dense tracks of every frame-0 pixel in camera-0 OpenCV coordinates.

    Args:
        points: `(T, N, 3)` float32, xyz of each track at each frame; N == H*W, row-major pixels of frame 0.
        colors: `(N, 3)` float32 RGB in [0, 1].
        visibility: `(T, N)` bool, False where a track is occluded or out of view.
        K: `(3, 3)` float32 intrinsics in pixels for `image_size`.
        image_size: `(H, W)` of frame 0.
        fps: frames per second of the scene time axis.
        prompt: the text prompt that produced the scene.
        metadata: JSON-serialisable provenance (model, seed, steps, guidance, ...).
    """

    points: torch.Tensor
    colors: torch.Tensor
    visibility: torch.Tensor
    K: torch.Tensor
    image_size: tuple[int, int]
    fps: float = 8.0
    prompt: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.points.shape[1])

    @property
    def height(self) -> int:
        return int(self.image_size[0])

    @property
    def width(self) -> int:
        return int(self.image_size[1])

    @property
    def depth0(self) -> torch.Tensor:
        """Frame-0 z-depth `(H, W)`."""
        return self.points[0, :, 2].reshape(self.height, self.width)

    def validate(self) -> None:
        """Raise `InputError` naming the problem if the scene is inconsistent or not finite."""
        if not (isinstance(self.image_size, (tuple, list)) and len(self.image_size) == 2
                and all(isinstance(v, numbers.Integral) and v > 0 for v in self.image_size)):
            raise InputError(f"image_size must be two positive ints (H, W), got {self.image_size!r}")
        for name in ("points", "colors", "visibility", "K"):
            if not isinstance(getattr(self, name), torch.Tensor):
                raise InputError(f"Scene4D.{name} must be a torch.Tensor, got {type(getattr(self, name)).__name__}")
        H, W = self.image_size
        if self.points.ndim != 3 or self.points.shape[-1] != 3:
            raise InputError(f"points must have shape (T, N, 3), got {tuple(self.points.shape)}")
        T, N = self.points.shape[:2]
        if T == 0 or N == 0:
            raise InputError(f"scene is empty: points has shape {tuple(self.points.shape)}")
        if N != H * W:
            raise InputError(f"points must have N = H*W = {H}*{W} = {H * W} tracks, got {N}")
        if not self.points.is_floating_point() or not torch.isfinite(self.points).all():
            bad = (~torch.isfinite(self.points)).any(-1).sum() if self.points.is_floating_point() else "?"
            raise InputError(f"points must be finite floats; {bad} of {T * N} points are NaN or infinite")
        if tuple(self.colors.shape) != (N, 3):
            raise InputError(f"colors must have shape (N, 3) = ({N}, 3), got {tuple(self.colors.shape)}")
        if not self.colors.is_floating_point() or not torch.isfinite(self.colors).all():
            raise InputError("colors must be finite floats in [0, 1]")
        if self.colors.min() < -1e-3 or self.colors.max() > 1.0 + 1e-3:
            raise InputError(f"colors must lie in [0, 1], got range [{float(self.colors.min()):.3g}, {float(self.colors.max()):.3g}]")
        if tuple(self.visibility.shape) != (T, N) or self.visibility.dtype != torch.bool:
            raise InputError(f"visibility must be a bool tensor of shape (T, N) = ({T}, {N}), "
                             f"got {self.visibility.dtype} {tuple(self.visibility.shape)}")
        if tuple(self.K.shape) != (3, 3) or not torch.isfinite(self.K).all():
            raise InputError(f"K must be a finite (3, 3) tensor, got shape {tuple(self.K.shape)}")
        if self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise InputError(f"K must have positive focal lengths, got fx={float(self.K[0, 0])}, fy={float(self.K[1, 1])}")
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
            raise InputError(f"fps must be a positive number, got {self.fps!r}")
        if not isinstance(self.prompt, str) or not isinstance(self.metadata, dict):
            raise InputError("prompt must be a str and metadata a dict")

    def centroid_depth(self) -> float:
        """Median frame-0 depth of the valid (finite, in front of the camera) points: the scene scale."""
        z = self.points[0, :, 2]
        z = z[torch.isfinite(z) & (z > DEPTH_EPS)]
        if z.numel() == 0:
            raise InputError("scene has no frame-0 point in front of the camera (all depths invalid)")
        return float(z.float().median())

    def to(self, device: torch.device | str) -> Scene4D:
        """A copy with tensors on `device`."""
        return Scene4D(self.points.to(device), self.colors.to(device), self.visibility.to(device),
                       self.K.to(device), tuple(self.image_size), self.fps, self.prompt, dict(self.metadata))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the scene atomically as one pickle-free `.safetensors` file with a JSON header."""
        from safetensors.torch import save_file

        self.validate()
        header = {
            "format": SCENE_FORMAT,
            "version": SCENE_VERSION,
            "convention": "opencv",
            "K": self.K.detach().cpu().double().tolist(),
            "image_size": [self.height, self.width],
            "fps": float(self.fps),
            "prompt": self.prompt,
            "metadata": self.metadata,
        }
        try:
            header_json = json.dumps(header, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InputError(f"Scene4D.metadata must be JSON-serialisable: {exc}") from exc
        tensors = {
            "points": self.points.detach().cpu().float().contiguous(),
            "colors": self.colors.detach().cpu().float().contiguous(),
            "visibility": self.visibility.detach().cpu().contiguous(),
        }
        with atomic_write(path) as tmp:
            save_file(tensors, str(tmp), metadata={_HEADER_KEY: header_json})
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> Scene4D:
        """Read a scene file written by `save`. Foreign, corrupt or newer files raise `InputError`."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise InputError(f"scene file {str(path)!r} does not exist")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"{str(path)!r} is not a more4d scene file (not a readable safetensors file: {exc})") from exc
        header = _parse_header(meta, path)
        missing = {"points", "colors", "visibility"} - tensors.keys()
        if missing:
            raise InputError(f"scene file {str(path)!r} lacks tensors {sorted(missing)}")
        try:
            scene = cls(
                points=tensors["points"].to(device),
                colors=tensors["colors"].to(device),
                visibility=tensors["visibility"].to(device),
                K=torch.tensor(header["K"], dtype=torch.float32, device=device),
                image_size=(int(header["image_size"][0]), int(header["image_size"][1])),
                fps=float(header["fps"]),
                prompt=str(header.get("prompt", "")),
                metadata=dict(header.get("metadata") or {}),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InputError(f"scene file {str(path)!r} has a malformed header: {exc!r}") from exc
        scene.validate()
        return scene


def _parse_header(meta: dict[str, str], path: Path) -> dict[str, Any]:
    if _HEADER_KEY not in meta:
        raise InputError(f"{str(path)!r} is not a more4d scene file (no '{_HEADER_KEY}' header in its metadata)")
    try:
        header = json.loads(meta[_HEADER_KEY])
    except json.JSONDecodeError as exc:
        raise InputError(f"scene file {str(path)!r} has a corrupt JSON header: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != SCENE_FORMAT:
        fmt = header.get("format") if isinstance(header, dict) else None
        raise InputError(f"{str(path)!r} is not a more4d scene file (format {fmt!r}, expected {SCENE_FORMAT!r})")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(f"scene file {str(path)!r} has an unknown version {version!r} (expected {SCENE_VERSION})")
    if version > SCENE_VERSION:
        raise InputError(f"scene file {str(path)!r} has version {version}, newer than this more4d reads "
                         f"(<= {SCENE_VERSION}); upgrade more4d")
    return header
