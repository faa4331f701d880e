"""Original Wan2.1 (Wan-Video / VideoX-Fun) parameter names <-> diffusers `WanTransformer3DModel` names.

The one table of the base Wan transformer (docs/method.md, "4D-STraG transformer"), with the loader of
original-layout folders. It names the architecture, so it lives with the models: the ViSM loader and LoRA converter
(`more4d.models`) and the checkpoint converters (`more4d.weights.convert_seed`, `released`) build on it.
Original `norm3` (the affine cross-attention norm) is diffusers' `norm2`; original `norm1`/`norm2` are
parameter-free.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch

from more4d.errors import InputError

# module (or parameter) name, original -> diffusers; top level
WAN_TOP_KEYS: dict[str, str] = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
    "head.head": "proj_out",
    "head.modulation": "scale_shift_table",  # a parameter
}
# inside `blocks.{i}.`
WAN_BLOCK_KEYS: dict[str, str] = {
    "modulation": "scale_shift_table",  # a parameter
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "cross_attn.k_img": "attn2.add_k_proj",
    "cross_attn.v_img": "attn2.add_v_proj",
    "cross_attn.norm_k_img": "attn2.norm_added_k",
    "norm3": "norm2",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def _lookup(name: str, top: dict[str, str], block: dict[str, str]) -> str | None:
    """Map a full parameter name through a (module or parameter) table."""
    m = _BLOCK.match(name)
    table, head, rest = (block, f"blocks.{m.group(1)}.", m.group(2)) if m else (top, "", name)
    if rest in table:
        return head + table[rest]
    module, _, param = rest.rpartition(".")
    if module in table:
        return f"{head}{table[module]}.{param}"
    return None


def original_to_diffusers_key(key: str, extra_top: dict[str, str] | None = None,
                              extra_block: dict[str, str] | None = None) -> str | None:
    """`blocks.3.self_attn.q.weight` -> `blocks.3.attn1.to_q.weight`; None for a key the tables do not know.

    `extra_top` / `extra_block` extend the base tables (e.g. STraG's MPM modules).
    """
    return _lookup(key, {**WAN_TOP_KEYS, **(extra_top or {})}, {**WAN_BLOCK_KEYS, **(extra_block or {})})


def diffusers_to_original_key(key: str, extra_top: dict[str, str] | None = None,
                              extra_block: dict[str, str] | None = None) -> str | None:
    """The inverse of `original_to_diffusers_key`."""
    top = {v: k for k, v in {**WAN_TOP_KEYS, **(extra_top or {})}.items()}
    block = {v: k for k, v in {**WAN_BLOCK_KEYS, **(extra_block or {})}.items()}
    return _lookup(key, top, block)


# original config.json (Wan-Video / VideoX-Fun) -> WanTransformer3DModel kwargs
def diffusers_config_from_original(config: dict, state_dict: dict[str, torch.Tensor]) -> dict:
    """WanTransformer3DModel kwargs from an original Wan `config.json` and its weights (shapes win over config:
    the authors' STraG config says `in_dim` 48 for a 64-channel patch embedding)."""
    pe = state_dict["patch_embedding.weight"]
    dim = pe.shape[0]
    num_heads = int(config.get("num_heads", max(1, dim // 128)))
    num_layers = len({int(m.group(1)) for k in state_dict if (m := _BLOCK.match(k))})
    patch = tuple(int(p) for p in pe.shape[2:])
    out = dict(
        patch_size=patch, num_attention_heads=num_heads, attention_head_dim=dim // num_heads,
        in_channels=int(pe.shape[1]), out_channels=int(state_dict["head.head.weight"].shape[0]) // math.prod(patch),
        text_dim=int(state_dict["text_embedding.0.weight"].shape[1]),
        freq_dim=int(state_dict["time_embedding.0.weight"].shape[1]),
        ffn_dim=int(state_dict["blocks.0.ffn.0.weight"].shape[0]), num_layers=num_layers,
        cross_attn_norm="blocks.0.norm3.weight" in state_dict,
        qk_norm="rms_norm_across_heads" if "blocks.0.self_attn.norm_q.weight" in state_dict else None,
        eps=float(config.get("eps", 1e-6)),
    )
    if "img_emb.proj.0.weight" in state_dict:
        out.update(image_dim=int(state_dict["img_emb.proj.0.weight"].shape[0]),
                   added_kv_proj_dim=int(state_dict["blocks.0.cross_attn.k_img.weight"].shape[1]))
    return out


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Weights from a folder of `*.safetensors` (shards merged; index ignored), one `.safetensors` file, or a torch
    file (`weights_only=True`; an optional top-level "state_dict" is unwrapped), as the authors' infer.py accepts."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise InputError(f"weights folder {str(path)!r} holds no *.safetensors file")
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(f))
        return state
    if not path.is_file():
        raise InputError(f"weights file {str(path)!r} not found")
    if path.suffix == ".safetensors":
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{str(path)!r} does not hold a state dict")
    return state


def load_original_wan_transformer(folder: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
                                  device: str | torch.device = "cpu"):
    """A diffusers `WanTransformer3DModel` from an original-layout folder (config.json + weights), strictly."""
    from diffusers import WanTransformer3DModel

    folder = Path(folder)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    state = read_state_dict(folder)
    kwargs = diffusers_config_from_original(config, state)
    with torch.device("meta"):
        model = WanTransformer3DModel(**kwargs)
    converted, unknown = {}, []
    for k, v in state.items():
        name = original_to_diffusers_key(k)
        (unknown.append(k) if name is None else converted.__setitem__(name, v))
    missing = sorted(set(model.state_dict()) - set(converted))
    if unknown or missing:
        raise InputError(f"{str(folder)!r} is not a Wan transformer: unknown keys {unknown[:5]}, missing {missing[:5]}")
    model.load_state_dict(converted, strict=True, assign=True)
    return finish_meta_model(model, dtype=dtype, device=device)


def finish_meta_model(model, *, dtype: torch.dtype, device: str | torch.device):
    """After `load_state_dict(assign=True)` into a meta-built Wan model: rebuild the (non-persistent) rotary
    buffers and cast parameters to `dtype`, keeping the model's `_keep_in_fp32_modules` in float32."""
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    c = model.config
    model.rope = WanRotaryPosEmbed(c.attention_head_dim, c.patch_size, c.rope_max_seq_len)
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, param in model.named_parameters():
        target = torch.float32 if keep & set(name.split(".")) else dtype
        param.data = param.data.to(target)
    return model.to(device)
