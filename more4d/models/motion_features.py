"""Feature extractors for the Motion Perception Module: `extractor(image (B, 3, H, W) in [0, 1]) -> (B, C, hf, wf)`.

- `OmniMAEViT`: the frozen video-pretrained OmniMAE ViT-B/16 trunk (full scale; docs/method.md, "OmniMAE"). The image
  is ImageNet-normalised, resized to 224x224 (bilinear), repeated to 2 frames, patchified by a (2, 16, 16) Conv3d,
  plus the fixed sinusoidal position embedding, 12 pre-norm blocks (exact GELU), final LayerNorm -> `(B, 768, 14, 14)`.
  `OmniMAEViT.from_omnimae_checkpoint(path)` loads the authors' `vitb_pretrain.torch` from a local file.
- `TinyMotionEncoder`: a small trainable CNN for the embedded default -> `(B, 128, H/16, W/16)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from more4d.errors import InputError
from more4d.models.placement import execution_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_image_batch(image: torch.Tensor) -> None:
    """Raise InputError unless `image` is a float `(B, 3, H, W)` batch."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3 or not image.is_floating_point():
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(f"`image` must be a float tensor (B, 3, H, W) in [0, 1], got {shape}")


class ViTBlock(nn.Module):
    """Pre-norm ViT block (fused qkv, exact GELU), timm/OmniMAE layout."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.fc2 = nn.Linear(int(dim * mlp_ratio), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(attn)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def sinusoid_position_table(num_positions: int, dim: int) -> torch.Tensor:
    """The fixed 1D sinusoid table of MAE/OmniMAE `(1, num_positions, dim)` (sin on even, cos on odd channels)."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    div = torch.pow(10000.0, 2 * (torch.arange(dim) // 2) / dim).to(torch.float64)
    table = pos / div
    table[:, 0::2] = torch.sin(table[:, 0::2])
    table[:, 1::2] = torch.cos(table[:, 1::2])
    return table.float()[None]


class OmniMAEViT(ModelMixin, ConfigMixin):
    r"""OmniMAE ViT-B/16 trunk as the MPM feature extractor: `(B, 3, H, W)` in [0, 1] -> `(B, 768, 14, 14)`."""

    @register_to_config
    def __init__(self, image_size: int = 224, patch_size: int = 16, num_frames: int = 2, dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, eps: float = 1e-6,
                 pos_embed_frames: int = 8) -> None:
        super().__init__()
        self.patch_embed = nn.Conv3d(3, dim, (num_frames, patch_size, patch_size), (num_frames, patch_size, patch_size))
        grid = image_size // patch_size
        self.register_buffer("pos_embed", sinusoid_position_table(pos_embed_frames * grid * grid, dim))
        self.blocks = nn.ModuleList(ViTBlock(dim, num_heads, mlp_ratio, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        check_image_batch(image)
        c = self.config
        x = (image.to(execution_device(self), torch.float32) - self.mean) / self.std
        x = F.interpolate(x, size=(c.image_size, c.image_size), mode="bilinear", align_corners=False)
        x = x.to(self.patch_embed.weight.dtype).unsqueeze(2).expand(-1, -1, c.num_frames, -1, -1)
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, 196, D)
        x = x + self.pos_embed[:, : x.shape[1]].to(x.dtype)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        grid = c.image_size // c.patch_size
        return x.transpose(1, 2).reshape(x.shape[0], c.dim, grid, grid)

    @classmethod
    def from_omnimae_checkpoint(cls, path: str | os.PathLike, **config) -> OmniMAEViT:
        """Load the authors' `vitb_pretrain.torch` (local file, `torch.load(weights_only=True)`), strict."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"OmniMAE checkpoint {str(path)!r} not found (expected vitb_pretrain.torch)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = cls(**config)
        report = load_omnimae_state_dict(model, state)
        report.raise_if_incomplete("OmniMAE checkpoint " + str(path))
        return model


@dataclass
class KeyReport:
    """Key accounting of a conversion: every source key is `mapped`, `ignored` (known, unused) or `unexpected`."""

    mapped: dict[str, str] = field(default_factory=dict)    # source key -> target key
    ignored: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)        # target keys nothing was loaded into
    shape_mismatch: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unexpected or self.missing or self.shape_mismatch)

    def raise_if_incomplete(self, what: str) -> None:
        if not self.ok:
            raise InputError(
                f"{what}: {len(self.unexpected)} unexpected keys {self.unexpected[:5]}, {len(self.missing)} missing "
                f"{self.missing[:5]}, shape mismatches {self.shape_mismatch[:5]}"
            )

    def account(self, key: str, name: str | None, value: torch.Tensor, target: dict[str, torch.Tensor],
                out: dict[str, torch.Tensor]) -> None:
        """Record source `key` (mapped to target key `name`, or None): unexpected, shape mismatch, or mapped into `out`."""
        if name is None or name not in target:
            self.unexpected.append(key)
        elif target[name].shape != value.shape:
            self.shape_mismatch.append(f"{key} {tuple(value.shape)} vs {name} {tuple(target[name].shape)}")
        else:
            self.mapped[key] = name
            out[name] = value

    def merge(self, other: KeyReport) -> KeyReport:
        return KeyReport({**self.mapped, **other.mapped}, self.ignored + other.ignored,
                         self.unexpected + other.unexpected, self.missing + other.missing,
                         self.shape_mismatch + other.shape_mismatch)


OMNIMAE_PREFIX = "trunk."
OMNIMAE_RENAMES = (("patch_embed.proj.1.", "patch_embed."), ("attn.qkv.", "qkv."), ("attn.proj.", "proj."),
                   ("mlp.fc1.", "fc1."), ("mlp.fc2.", "fc2."))
OMNIMAE_UNUSED = ("trunk.decoder.", "trunk.mask_token", "head.")


def omnimae_key(key: str) -> str | None:
    """OmniMAE checkpoint key (`trunk.blocks.0.attn.qkv.weight`) -> OmniMAEViT key, or None if unused."""
    if key.startswith(OMNIMAE_UNUSED) or not key.startswith(OMNIMAE_PREFIX):
        return None
    key = key[len(OMNIMAE_PREFIX):]
    for old, new in OMNIMAE_RENAMES:
        key = key.replace(old, new)
    return key


def load_omnimae_state_dict(model: OmniMAEViT, state: dict[str, torch.Tensor], prefix: str = "") -> KeyReport:
    """Load an OmniMAE state dict (keys `prefix + trunk.*`, `head.*`) into `model`; return the key report."""
    report = KeyReport()
    target = model.state_dict()
    loaded = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        src = key[len(prefix):]
        name = omnimae_key(src)
        if name is None and src.startswith(OMNIMAE_UNUSED):
            report.ignored.append(key)
        else:
            report.account(key, name, value, target, loaded)
    report.missing = sorted(set(target) - set(loaded))
    model.load_state_dict(loaded, strict=False)
    return report


class TinyMotionEncoder(ModelMixin, ConfigMixin):
    r"""Small trainable CNN extractor: `(B, 3, H, W)` in [0, 1] -> `(B, feature_dim, H/16, W/16)` (H, W % 16 == 0)."""

    @register_to_config
    def __init__(self, feature_dim: int = 128, channels: tuple[int, ...] = (32, 64, 96, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c), c), nn.SiLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.SiLU()]
            c_in = c
        layers.append(nn.Conv2d(c_in, feature_dim, 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        check_image_batch(image)
        x = (image.to(execution_device(self), torch.float32) - self.mean) / self.std
        return self.net(x.to(self.net[0].weight.dtype))
