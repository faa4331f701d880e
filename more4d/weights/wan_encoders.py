"""Wan2.1's original-format text and image encoders -> transformers `UMT5EncoderModel` / `CLIPVisionModel`.

The Wan2.1 base repositories (Wan-AI/Wan2.1-*, alibaba-pai/Wan2.1-Fun-*) ship both encoders as torch pickles of
state dicts in the module naming of the Wan-Video code (github.com/Wan-Video/Wan2.1, `wan/modules/`):

- `models_t5_umt5-xxl-enc-bf16.pth`: `t5.py::T5Encoder`, the umT5-XXL encoder (vocab 256384, dim 4096, 64 heads,
  24 blocks, FFN 10240, 32 buckets, one relative position embedding per block, tanh-GELU gated FFN, RMS norm).
- `models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`: `clip.py::XLMRobertaCLIP` (open_clip
  xlm-roberta-large-ViT-H-14); Wan I2V uses only its ViT-H/14 vision tower (`visual.*`, 224 px, dim 1280, 32 pre-norm
  blocks, exact GELU) and takes the output of its first 31 blocks, i.e. `CLIPVisionModel`'s `hidden_states[-2]`.
  The text tower (`textual.*`, `log_scale`) and the vision projection `visual.head` are read past ("ignored").

Both loaders read the file with `torch.load(weights_only=True, mmap=True)`, derive the config from tensor shapes,
account for every key (`KeyReport`: mapped / ignored / unexpected / missing / shape mismatch; any of the last three
raises `InputError`) and assign the tensors into a model built on the meta device. The inverse functions write the
Wan layout from transformers models (tests and tiny fixtures).

    text_encoder = load_wan_umt5("models_t5_umt5-xxl-enc-bf16.pth", dtype=torch.bfloat16)
    image_encoder = load_wan_clip_vision("models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
"""

from __future__ import annotations

import math
import os
import pickle
import re
from collections.abc import Callable
from typing import TypeVar

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, PreTrainedModel, UMT5Config, UMT5EncoderModel

from more4d.errors import InputError
from more4d.models.motion_features import KeyReport

# ----------------------------------------------------------------------------------------------- umT5 tables
# Wan T5Encoder -> UMT5EncoderModel; `encoder.embed_tokens.weight` is tied to `shared.weight`
UMT5_TOP_KEYS: dict[str, str] = {
    "token_embedding.weight": "shared.weight",
    "norm.weight": "encoder.final_layer_norm.weight",
}
# inside `blocks.{i}.` -> inside `encoder.block.{i}.`
UMT5_BLOCK_KEYS: dict[str, str] = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # gelu_tanh(gate(x)) * fc1(x)
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
UMT5_TIED_KEY = "encoder.embed_tokens.weight"
UMT5_MAX_DISTANCE = 128  # Wan's T5RelativeEmbedding max_dist (not stored in the file)

# ---------------------------------------------------------------------------------------------- CLIP tables
# Wan XLMRobertaCLIP `visual.*` -> CLIPVisionModel (transformers 5 names: no `vision_model.` prefix)
CLIP_TOP_KEYS: dict[str, str] = {
    "visual.patch_embedding.weight": "embeddings.patch_embedding.weight",
    "visual.cls_embedding": "embeddings.class_embedding",  # (1, 1, D) -> (D,)
    "visual.pos_embedding": "embeddings.position_embedding.weight",  # (1, L, D) -> (L, D)
    "visual.pre_norm.weight": "pre_layrnorm.weight",
    "visual.pre_norm.bias": "pre_layrnorm.bias",
    "visual.post_norm.weight": "post_layernorm.weight",
    "visual.post_norm.bias": "post_layernorm.bias",
}
# inside `visual.transformer.{i}.` -> inside `encoder.layers.{i}.`; `attn.to_qkv.*` is split separately
CLIP_BLOCK_KEYS: dict[str, str] = {
    "norm1.weight": "layer_norm1.weight",
    "norm1.bias": "layer_norm1.bias",
    "attn.proj.weight": "self_attn.out_proj.weight",
    "attn.proj.bias": "self_attn.out_proj.bias",
    "norm2.weight": "layer_norm2.weight",
    "norm2.bias": "layer_norm2.bias",
    "mlp.0.weight": "mlp.fc1.weight",
    "mlp.0.bias": "mlp.fc1.bias",
    "mlp.2.weight": "mlp.fc2.weight",
    "mlp.2.bias": "mlp.fc2.bias",
}
CLIP_QKV = ("q_proj", "k_proj", "v_proj")  # row blocks of Wan's fused `to_qkv` (view(b, s, 3, heads, d))
CLIP_HEAD_KEY = "visual.head"  # (D, 1024) projection, unused by Wan I2V; CLIPVisionModel holds none
CLIP_TEXT_PREFIX = "textual."
CLIP_TEXT_KEYS = ("log_scale",)
CLIP_LAYER_NORM_EPS = 1e-5

ModelT = TypeVar("ModelT", bound=PreTrainedModel)

_WAN_T5_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_HF_T5_BLOCK = re.compile(r"encoder\.block\.(\d+)\.(.+)")
_WAN_VIT_BLOCK = re.compile(r"visual\.transformer\.(\d+)\.(.+)")
_HF_VIT_BLOCK = re.compile(r"encoder\.layers\.(\d+)\.(.+)")
_WAN_QKV = re.compile(r"visual\.transformer\.(\d+)\.attn\.to_qkv\.(weight|bias)")
_HF_QKV = re.compile(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)")


def _map_key(key: str, top: dict[str, str], block: dict[str, str], pattern: re.Pattern[str],
             block_prefix: str) -> str | None:
    """Map `key` through a top-level table or, for `pattern`-matched block keys, a per-block table."""
    if key in top:
        return top[key]
    m = pattern.fullmatch(key)
    if m and m.group(2) in block:
        return f"{block_prefix}{m.group(1)}.{block[m.group(2)]}"
    return None


def _inverse(table: dict[str, str]) -> dict[str, str]:
    return {v: k for k, v in table.items()}


def wan_to_umt5_key(key: str) -> str | None:
    """`blocks.3.ffn.gate.0.weight` -> `encoder.block.3.layer.1.DenseReluDense.wi_0.weight`; None if unknown."""
    return _map_key(key, UMT5_TOP_KEYS, UMT5_BLOCK_KEYS, _WAN_T5_BLOCK, "encoder.block.")


def umt5_to_wan_key(key: str) -> str | None:
    """The inverse of `wan_to_umt5_key` (None for the tied `encoder.embed_tokens.weight` and unknown keys)."""
    return _map_key(key, _inverse(UMT5_TOP_KEYS), _inverse(UMT5_BLOCK_KEYS), _HF_T5_BLOCK, "blocks.")


def wan_to_clip_vision_key(key: str) -> str | None:
    """`visual.transformer.3.mlp.0.weight` -> `encoder.layers.3.mlp.fc1.weight`; None for unknown keys and for
    the fused `attn.to_qkv.*` (see `clip_vision_qkv_keys`)."""
    return _map_key(key, CLIP_TOP_KEYS, CLIP_BLOCK_KEYS, _WAN_VIT_BLOCK, "encoder.layers.")


def clip_vision_to_wan_key(key: str) -> str | None:
    """The inverse of `wan_to_clip_vision_key` (None for the q/k/v projections and unknown keys)."""
    return _map_key(key, _inverse(CLIP_TOP_KEYS), _inverse(CLIP_BLOCK_KEYS), _HF_VIT_BLOCK, "visual.transformer.")


def clip_vision_qkv_keys(key: str) -> tuple[str, str, str] | None:
    """`visual.transformer.3.attn.to_qkv.weight` -> the three `encoder.layers.3.self_attn.{q,k,v}_proj.weight`."""
    m = _WAN_QKV.fullmatch(key)
    if not m:
        return None
    i, param = m.groups()
    q, k, v = (f"encoder.layers.{i}.self_attn.{p}.{param}" for p in CLIP_QKV)
    return q, k, v


def is_clip_unused_key(key: str) -> bool:
    """Known keys of Wan's CLIP file that the vision encoder does not use: text tower, `log_scale`, `visual.head`."""
    return key.startswith(CLIP_TEXT_PREFIX) or key in CLIP_TEXT_KEYS or key == CLIP_HEAD_KEY


# ------------------------------------------------------------------------------------------ state-dict maps
def convert_wan_umt5_state_dict(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
                                ) -> tuple[dict[str, torch.Tensor], KeyReport]:
    """Wan T5Encoder state dict -> `UMT5EncoderModel` state dict (`target`: the model's state dict, for names and
    shapes); the tied `encoder.embed_tokens.weight` gets the token embedding."""
    report, out = KeyReport(), {}
    for key, value in state.items():
        report.account(key, wan_to_umt5_key(key), value, target, out)
    if "shared.weight" in out:
        out[UMT5_TIED_KEY] = out["shared.weight"]
    report.missing = sorted(set(target) - set(out))
    return out, report


def _drop_leading_ones(value: torch.Tensor, ndim: int) -> torch.Tensor:
    """`(1, ..., 1, *s)` -> `s` with `len(s) == ndim`; other shapes unchanged (then reported as a mismatch)."""
    lead = value.shape[:-ndim] if value.ndim > ndim else ()
    return value.reshape(value.shape[-ndim:]) if lead and all(d == 1 for d in lead) else value


# Wan -> CLIPVisionModel shapes, and back
_CLIP_RESHAPE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "visual.cls_embedding": lambda v: _drop_leading_ones(v, 1),
    "visual.pos_embedding": lambda v: _drop_leading_ones(v, 2),
}
_CLIP_UNRESHAPE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "visual.cls_embedding": lambda v: v.reshape(1, 1, -1),
    "visual.pos_embedding": lambda v: v.unsqueeze(0),
}


def convert_wan_clip_vision_state_dict(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
                                       ) -> tuple[dict[str, torch.Tensor], KeyReport]:
    """Wan XLMRobertaCLIP state dict -> `CLIPVisionModel` state dict (`target`: the model's state dict); the fused
    `to_qkv` is split into q/k/v (mapped to `...{q,k,v}_proj...`), text-tower keys and `visual.head` are ignored."""
    report, out = KeyReport(), {}
    for key, value in state.items():
        qkv = clip_vision_qkv_keys(key)
        if qkv is not None:
            label = qkv[0].replace(".q_proj.", ".{q,k,v}_proj.")
            fused = {label: torch.cat([target[k] for k in qkv])} if all(k in target for k in qkv) else {}
            loaded: dict[str, torch.Tensor] = {}
            report.account(key, label, value, fused, loaded)
            if loaded:
                out.update(zip(qkv, value.chunk(3), strict=True))
        elif is_clip_unused_key(key):
            report.ignored.append(key)
        else:
            reshape = _CLIP_RESHAPE.get(key)
            report.account(key, wan_to_clip_vision_key(key), reshape(value) if reshape else value, target, out)
    report.missing = sorted(set(target) - set(out))
    return out, report


def umt5_to_wan_state_dict(model: UMT5EncoderModel) -> dict[str, torch.Tensor]:
    """A `UMT5EncoderModel`'s weights in Wan's T5Encoder layout (what `load_wan_umt5` reads)."""
    out = {}
    for key, value in model.state_dict().items():
        if key == UMT5_TIED_KEY:
            continue
        name = umt5_to_wan_key(key)
        if name is None:
            raise InputError(f"`model` has a parameter {key!r} that Wan's T5Encoder does not (gated-GELU UMT5 "
                             "encoders only)")
        out[name] = value
    return out


def clip_vision_to_wan_state_dict(model: CLIPVisionModel, text_tower: dict[str, torch.Tensor] | None = None
                                  ) -> dict[str, torch.Tensor]:
    """A `CLIPVisionModel`'s weights in Wan's XLMRobertaCLIP layout (what `load_wan_clip_vision` reads).

    q/k/v are fused into `to_qkv`; `visual.head` (not held by CLIPVisionModel, unused by Wan) is written as zeros of
    shape `(hidden_size, config.projection_dim)`; `text_tower` (`textual.*` / `log_scale` keys) is copied in.
    """
    out: dict[str, torch.Tensor] = {}
    state = model.state_dict()
    for key, value in state.items():
        if m := _HF_QKV.fullmatch(key):
            i, which, param = m.groups()
            if which == "q":
                qkv = [state[f"encoder.layers.{i}.self_attn.{p}.{param}"] for p in CLIP_QKV]
                out[f"visual.transformer.{i}.attn.to_qkv.{param}"] = torch.cat(qkv)
            continue
        name = clip_vision_to_wan_key(key)
        if name is None:
            raise InputError(f"`model` has a parameter {key!r} that Wan's vision tower does not")
        reshape = _CLIP_UNRESHAPE.get(name)
        out[name] = reshape(value) if reshape else value
    c = model.config
    out[CLIP_HEAD_KEY] = torch.zeros(c.hidden_size, c.projection_dim, dtype=model.dtype)
    for key, value in (text_tower or {}).items():
        if not (key.startswith(CLIP_TEXT_PREFIX) or key in CLIP_TEXT_KEYS):
            raise InputError(f"`text_tower` keys must start with {CLIP_TEXT_PREFIX!r} or be one of {CLIP_TEXT_KEYS}, "
                             f"got {key!r}")
        out[key] = value
    return out


# ------------------------------------------------------------------------------------------------- configs
def _require(state: dict[str, torch.Tensor], key: str, what: str) -> torch.Tensor:
    if key not in state:
        raise InputError(f"not a Wan {what}: no {key!r} among {len(state)} keys")
    return state[key]


def _num_blocks(state: dict[str, torch.Tensor], pattern: re.Pattern[str]) -> int:
    return len({m.group(1) for k in state if (m := pattern.fullmatch(k))})


def umt5_config_from_wan(state: dict[str, torch.Tensor]) -> UMT5Config:
    """UMT5Config of a Wan T5Encoder state dict, from tensor shapes (heads and buckets from `pos_embedding`)."""
    what = "umT5 encoder"
    vocab, dim = _require(state, "token_embedding.weight", what).shape
    num_buckets, num_heads = _require(state, "blocks.0.pos_embedding.embedding.weight", what).shape
    dim_attn = _require(state, "blocks.0.attn.q.weight", what).shape[0]
    if dim_attn % num_heads:
        raise InputError(f"Wan umT5 encoder: attention width {dim_attn} is not a multiple of {num_heads} heads")
    return UMT5Config(
        vocab_size=vocab, d_model=dim, d_kv=dim_attn // num_heads, num_heads=num_heads,
        d_ff=_require(state, "blocks.0.ffn.fc1.weight", what).shape[0], num_layers=_num_blocks(state, _WAN_T5_BLOCK),
        relative_attention_num_buckets=num_buckets, relative_attention_max_distance=UMT5_MAX_DISTANCE,
        feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0,
    )


def clip_vision_config_from_wan(state: dict[str, torch.Tensor], num_heads: int = 16) -> CLIPVisionConfig:
    """CLIPVisionConfig of Wan's XLMRobertaCLIP vision tower, from tensor shapes (`num_heads` is not stored: 16 for
    ViT-H/14)."""
    what = "CLIP vision tower"
    dim, channels, patch, _ = _require(state, "visual.patch_embedding.weight", what).shape
    num_positions = _require(state, "visual.pos_embedding", what).shape[-2]
    grid = math.isqrt(num_positions - 1)
    if grid * grid != num_positions - 1:
        raise InputError(f"Wan CLIP vision tower: {num_positions} positions are not 1 + a square grid")
    if num_heads < 1 or dim % num_heads:
        raise InputError(f"`num_heads` must divide the width {dim}, got {num_heads}")
    head = state.get(CLIP_HEAD_KEY)
    return CLIPVisionConfig(
        hidden_size=dim, intermediate_size=_require(state, "visual.transformer.0.mlp.0.weight", what).shape[0],
        num_hidden_layers=_num_blocks(state, _WAN_VIT_BLOCK), num_attention_heads=num_heads, num_channels=channels,
        image_size=grid * patch, patch_size=patch, hidden_act="gelu", layer_norm_eps=CLIP_LAYER_NORM_EPS,
        attention_dropout=0.0, **({} if head is None else {"projection_dim": head.shape[-1]}),
    )


# ------------------------------------------------------------------------------------------------- loaders
def read_torch_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A `.pth` / `.bin` state dict of the released weights, memory-mapped (`weights_only=True`: pickled code and
    objects are refused); every failure is an `InputError` naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"weights file {path!r} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        detail = next((line.strip() for line in str(e).splitlines() if "WeightsUnpickler error" in line),
                      str(e).splitlines()[0])
        raise InputError(f"{path!r} holds objects other than tensors, which weights-only loading refuses "
                         f"(released weights are plain state dicts): {detail}") from e
    except RuntimeError as e:
        raise InputError(f"{path!r} is not a zip-format torch file (torch.save's default; needed for mmap): "
                         f"{str(e).splitlines()[0]}") from e
    if not isinstance(state, dict):
        raise InputError(f"{path!r} must hold a state dict, got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(f"{path!r} must map names to tensors; {len(bad)} entries do not, e.g. {bad[:3]}")
    return state


def _finish(model: ModelT, *, dtype: torch.dtype, device: str | torch.device) -> ModelT:
    """Cast and move a model loaded with `assign=True`, as `from_pretrained(torch_dtype=dtype)` would: under
    float16 the model's `_keep_in_fp32_modules` (UMT5: `wo`) stay float32."""
    keep = set(model._keep_in_fp32_modules or ()) if dtype == torch.float16 else set()
    for name, param in model.named_parameters():
        param.data = param.data.to(device=device, dtype=torch.float32 if keep & set(name.split(".")) else dtype)
    return model.eval()


def load_wan_umt5(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
                  device: str | torch.device = "cpu") -> UMT5EncoderModel:
    """`UMT5EncoderModel` from Wan's `models_t5_umt5-xxl-enc-bf16.pth`, every key accounted for (else InputError)."""
    state = read_torch_state_dict(path)
    config = umt5_config_from_wan(state)
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    converted, report = convert_wan_umt5_state_dict(state, model.state_dict())
    report.raise_if_incomplete(f"{os.fspath(path)!r} (Wan umT5 encoder)")
    model.load_state_dict(converted, strict=True, assign=True)
    model.set_input_embeddings(model.shared)  # re-tie: assign gave embed_tokens its own Parameter
    return _finish(model, dtype=dtype, device=device)


def load_wan_clip_vision(path: str | os.PathLike, *, num_heads: int = 16, dtype: torch.dtype = torch.float32,
                         device: str | torch.device = "cpu") -> CLIPVisionModel:
    """`CLIPVisionModel` from Wan's `models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth` (vision tower only;
    the text tower is ignored), every key accounted for (else InputError). `num_heads`: 16 for ViT-H/14."""
    state = read_torch_state_dict(path)
    config = clip_vision_config_from_wan(state, num_heads)
    with torch.device("meta"):
        model = CLIPVisionModel(config)
    converted, report = convert_wan_clip_vision_state_dict(state, model.state_dict())
    report.raise_if_incomplete(f"{os.fspath(path)!r} (Wan CLIP vision tower)")
    model.load_state_dict(converted, strict=True, assign=True)
    emb = model.embeddings  # the non-persistent position ids were built on meta
    emb.position_ids = torch.arange(emb.num_positions, device=device).expand((1, -1))
    return _finish(model, dtype=dtype, device=device)
