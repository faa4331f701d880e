"""Real photographs as surface textures for TrajScene-Synth (`SynthConfig.photo_prob`).

The photos are the files scikit-image ships in `skimage/data/`, read straight from the installed package with PIL
(never fetched). Each is kept as a mip pyramid (short side `SHORT_SIDE`, then halved down to `MIN_SIDE`) so that
distant surfaces are filtered instead of aliased; grayscale photos become 3-channel (the renderer tints them).

>>> bank = photo_bank(torch.device("cpu"))
>>> rgb = bank.sample(photo, x, y, level)   # (K, 3) at normalised photo coords and fractional mip levels
"""

from __future__ import annotations

import functools
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from more4d.errors import InputError

TRAINING_PHOTOS = ("brick", "camera", "coins", "color", "grass", "gravel", "horse", "hubble_deep_field", "ihc",
                   "logo", "microaneurysms", "moon", "page", "retina", "text", "cell", "clock_motion",
                   "chessboard_RGB")
# The project evaluates on these photos (scripts/contact_sheet.py, tests/test_eval_metrics.py; the motorcycle stereo
# pair for depth), so training never textures a surface with them.
HELD_OUT_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right")
if set(TRAINING_PHOTOS) & set(HELD_OUT_PHOTOS):
    raise AssertionError(f"held-out photos in the training list: {set(TRAINING_PHOTOS) & set(HELD_OUT_PHOTOS)}")
SHORT_SIDE = 256
MIN_SIDE = 16  # the coarsest mip level's short side
SKIMAGE_PIN = "scikit-image==0.25.2"


def skimage_data_dir() -> Path:
    """scikit-image's bundled data folder (`skimage/data`), read in place; `InputError` naming the install command
    when scikit-image is missing."""
    try:
        return Path(str(importlib.resources.files("skimage") / "data"))
    except ImportError:
        raise InputError(f"photo textures (photo_prob > 0) and `more4d eval --photos` read scikit-image's bundled "
                         f"photos: `pip install {SKIMAGE_PIN}` (it is in requirements-dev.txt)") from None


@functools.cache
def load_photo(name: str) -> torch.Tensor:
    """Photo `name` (a file stem in `skimage/data/`) as float32 RGB `(H, W, 3)` in [0, 1], short side `SHORT_SIDE`.

    Transparent pixels are composited over white.
    """
    folder = skimage_data_dir()
    files = [f for f in folder.iterdir() if f.name.rsplit(".", 1)[0] == name and f.name.endswith((".png", ".jpg"))]
    if not files:
        raise InputError(f"no photo {name!r} in {folder} (scikit-image {SKIMAGE_PIN} ships it)")
    with files[0].open("rb") as fh, Image.open(fh) as im:
        im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA")).convert("RGB")
        scale = SHORT_SIDE / min(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
        return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)


@functools.cache
def is_grayscale(name: str) -> bool:
    """Whether photo `name` has no colour (the renderer tints those)."""
    photo = load_photo(name)
    return bool((photo == photo[..., :1]).all())


def photo_sizes() -> list[tuple[int, int]]:
    """`(height, width)` of each of `TRAINING_PHOTOS` at level 0."""
    return [tuple(load_photo(name).shape[:2]) for name in TRAINING_PHOTOS]


@dataclass(frozen=True)
class PhotoBank:
    """All `TRAINING_PHOTOS` at every mip level, flattened into one texel table on one device.

    texels `(M, 3)`; offset, height, width `(P, L)` long: where level l of photo k starts in `texels` and its size.
    """

    texels: torch.Tensor
    offset: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor

    @property
    def levels(self) -> int:
        return self.offset.shape[1]

    def sample(self, photo: torch.Tensor, x: torch.Tensor, y: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Trilinear lookup: photo indices `(K,)`, normalised coords x, y `(K,)` in [0, 1] (clamped at the border),
        fractional mip levels `(K,)` (clamped to the pyramid) -> RGB `(K, 3)`."""
        level = level.clamp(0, self.levels - 1)
        l0 = level.floor().long()
        l1 = (l0 + 1).clamp_max(self.levels - 1)
        a = (level - l0)[:, None]
        return torch.lerp(self._bilinear(photo, x, y, l0), self._bilinear(photo, x, y, l1), a)

    def _bilinear(self, photo: torch.Tensor, x: torch.Tensor, y: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        h, w, offset = self.height[photo, level], self.width[photo, level], self.offset[photo, level]
        px = (x * w - 0.5).clamp(min=0).minimum(w - 1)  # texel centres at (i + 0.5) / w
        py = (y * h - 0.5).clamp(min=0).minimum(h - 1)
        x0, y0 = px.floor().long(), py.floor().long()
        x1, y1 = (x0 + 1).minimum(w - 1), (y0 + 1).minimum(h - 1)
        fx, fy = (px - x0)[:, None], (py - y0)[:, None]
        top = torch.lerp(self.texels[offset + y0 * w + x0], self.texels[offset + y0 * w + x1], fx)
        bottom = torch.lerp(self.texels[offset + y1 * w + x0], self.texels[offset + y1 * w + x1], fx)
        return torch.lerp(top, bottom, fy)


@functools.cache
def photo_bank(device: torch.device) -> PhotoBank:
    """The `PhotoBank` of `TRAINING_PHOTOS` on `device` (built once per device)."""
    levels = int(np.log2(SHORT_SIDE // MIN_SIDE)) + 1
    chunks, offset, height, width, start = [], [], [], [], 0
    for name in TRAINING_PHOTOS:
        image = load_photo(name).permute(2, 0, 1)[None]
        rows = []
        for _ in range(levels):
            chunks.append(image[0].permute(1, 2, 0).reshape(-1, 3))
            rows.append((start, image.shape[2], image.shape[3]))
            start += chunks[-1].shape[0]
            image = F.avg_pool2d(image, 2, ceil_mode=True)
        offset.append([r[0] for r in rows])
        height.append([r[1] for r in rows])
        width.append([r[2] for r in rows])
    return PhotoBank(texels=torch.cat(chunks).to(device), offset=torch.tensor(offset, device=device),
                     height=torch.tensor(height, device=device), width=torch.tensor(width, device=device))
