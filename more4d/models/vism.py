"""The 4D-ViSM inpainting transformer: a stock diffusers `WanTransformer3DModel` in the Wan2.1-Fun-InP layout.

Input channels (36) = noisy latent 16 | hole-mask latent 4 | masked-render latent 16 (docs/method.md, "4D-ViSM").
Cross-attention sees CLIP image tokens (penultimate hidden state of a `CLIPVisionModel`) prepended to the text
tokens; diffusers splits them at `TEXT_CONTEXT_LEN` from the end, so text embeddings are always padded to 512.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import WanTransformer3DModel
from transformers import CLIPVisionConfig, CLIPVisionModel

from more4d.errors import InputError
from more4d.models.wan_keys import load_original_wan_transformer

LATENT_CHANNELS = 16
MASK_CHANNELS = 4  # 4 video frames per latent frame (the first frame repeated 4 times)
VISM_IN_CHANNELS = LATENT_CHANNELS + MASK_CHANNELS + LATENT_CHANNELS
TEXT_CONTEXT_LEN = 512  # diffusers' WanAttnProcessor hard-codes the text length when image tokens are present

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Wan2.1-Fun-V1.1-14B-InP (diffusers naming); 40 x 12 + 8 = 488 Linear layers (the ViSM LoRA targets).
WAN_FUN_14B_INP_CONFIG: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=VISM_IN_CHANNELS,
    out_channels=LATENT_CHANNELS, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120, rope_max_seq_len=1024,
)
# The embedded default (docs/contracts.md "Tiny configuration").
TINY_VISM_CONFIG: dict[str, Any] = dict(
    WAN_FUN_14B_INP_CONFIG, num_attention_heads=3, attention_head_dim=64, text_dim=128, ffn_dim=768, num_layers=6,
    image_dim=128, added_kv_proj_dim=192,
)
TINY_IMAGE_ENCODER_CONFIG: dict[str, Any] = dict(
    hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, image_size=112,
    patch_size=16, projection_dim=128, hidden_act="quick_gelu",
)


def build_vism_transformer(config: dict[str, Any] | None = None, *, device: str | torch.device | None = None,
                           dtype: torch.dtype | None = None) -> WanTransformer3DModel:
    """Build the ViSM transformer from a diffusers config dict (default: the 14B InP config).

    `device="meta"` builds without allocating memory (for benchmarks: then `to_empty` + `init_random_`).
    """
    config = dict(WAN_FUN_14B_INP_CONFIG if config is None else config)
    check_vism_config(config)
    with torch.device(device or "cpu"):
        model = WanTransformer3DModel(**config)
    if dtype is not None and str(device) != "meta":
        model = model.to(dtype)
    return model


def check_vism_config(config: dict[str, Any]) -> None:
    """Raise `InputError` unless `config` describes an inpainting (36-channel, image-conditioned) Wan DiT."""
    if config.get("in_channels") != VISM_IN_CHANNELS or config.get("out_channels", LATENT_CHANNELS) != LATENT_CHANNELS:
        raise InputError(f"ViSM transformer needs in_channels={VISM_IN_CHANNELS} and out_channels={LATENT_CHANNELS} "
                         f"(Wan-Fun-InP), got in_channels={config.get('in_channels')}, "
                         f"out_channels={config.get('out_channels')}")
    if not config.get("image_dim") or not config.get("added_kv_proj_dim"):
        raise InputError("ViSM transformer needs CLIP image conditioning: set image_dim and added_kv_proj_dim, "
                         f"got image_dim={config.get('image_dim')}, added_kv_proj_dim={config.get('added_kv_proj_dim')}")


def build_tiny_vism_components(seed: int = 0) -> dict[str, torch.nn.Module]:
    """Seeded random tiny ViSM: `transformer` (dim 192, 6 layers) and `image_encoder` (CLIP ViT, hidden 128)."""
    torch.manual_seed(seed)
    transformer = build_vism_transformer(TINY_VISM_CONFIG)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(**TINY_IMAGE_ENCODER_CONFIG)).eval()
    return dict(transformer=transformer.eval(), image_encoder=image_encoder)


@torch.no_grad()
def init_random_(model: torch.nn.Module, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """Fill every parameter of `model` in place with seeded random values (norm weights 1, biases 0).

    For benchmarks of a model built on the meta device and moved with `to_empty`: cheap, on the model's device.
    """
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.zero_()
        elif p.ndim == 1:
            p.fill_(1.0)
        else:
            p.normal_(0.0, std, generator=gen)
    return model


def build_random(build: Callable[[], Any], device: str | torch.device, dtype: torch.dtype, seed: int = 0) -> Any:
    """Build (large) models straight onto `device` in `dtype` with seeded random weights, for benchmarks.

    `build()` returns a module or a dict of components; its parameters are created on the meta device (no CPU
    copy), then allocated on `device` and filled by `init_random_`. Buffers (rope tables, position ids) keep
    the values the constructors computed.
    """
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        built = build()
    if isinstance(built, dict):
        return {k: _materialize(m, device, dtype, seed) if isinstance(m, torch.nn.Module) else m
                for k, m in built.items()}
    return _materialize(built, device, dtype, seed)


def _materialize(model: torch.nn.Module, device: str | torch.device, dtype: torch.dtype, seed: int) -> torch.nn.Module:
    buffers = {name: b for name, b in model.named_buffers()}
    model = model.to(dtype).to_empty(device=device)
    for name, value in buffers.items():
        owner, _, attr = name.rpartition(".")
        model.get_submodule(owner)._buffers[attr] = value.to(device)
    return init_random_(model.eval(), seed=seed)


def encode_clip_image(image_encoder: CLIPVisionModel, images: torch.Tensor) -> torch.Tensor:
    """CLIP image tokens for cross-attention, as Wan I2V uses them (penultimate hidden state).

    Args:
        images: `(B, H, W, 3)` float RGB in [0, 1] (any size: resized bilinearly to the encoder's image size).
    Returns:
        `(B, L, D)` with L = (image_size / patch_size)^2 + 1 and D = hidden size, in the encoder's dtype.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"images must have shape (B, H, W, 3), got {tuple(images.shape)}")
    size = image_encoder.config.image_size
    x = images.permute(0, 3, 1, 2).float()  # on `images`' device: offload hooks move the encoder there
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    out = image_encoder(pixel_values=((x - mean) / std).to(image_encoder.dtype), output_hidden_states=True)
    return out.hidden_states[-2]


def load_vism_transformer(folder: str | os.PathLike, *, dtype: torch.dtype = torch.bfloat16,
                          device: str | torch.device = "cpu") -> WanTransformer3DModel:
    """Load the ViSM transformer from a local folder: a diffusers `save_pretrained` folder, or an original
    Wan2.1-Fun-14B-InP folder (config.json with `dim`/`in_dim`, `*.safetensors` with original Wan key names).

    Nothing is downloaded. Raises `InputError` naming what is missing.
    """
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise InputError(f"ViSM transformer folder {str(folder)!r} has no config.json")
    config = json.loads(config_file.read_text())
    if "num_attention_heads" in config:  # diffusers layout
        model = WanTransformer3DModel.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
        check_vism_config(dict(model.config))
        return model.to(device)
    model = load_original_wan_transformer(folder, dtype=dtype, device=device)
    check_vism_config(dict(model.config))
    return model
