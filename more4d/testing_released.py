"""Random weights in the released MoGe4D layout (`more4d.weights.layout`), for tests and benchmarks.

`write_released_layout(root, scale="tiny")` writes small models that run on a CPU in seconds; `scale="full"`
writes the 14B shapes (tens of GB: the GPU benchmark writes one stage at a time with `repos=`). Every file uses the
authors' published names and formats: Wan-original transformer keys (the ViSM base sharded with an index),
`.pth` / `pytorch_model.bin` torch pickles, a kohya LoRA, the 4D-STraG config with its `in_dim` 48 quirk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from more4d.weights import layout

SCALES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        heads=2, head_dim=16, layers=2, ffn=64, text_dim=32, freq_dim=32, vae_base=16, adaptor=32,
        omnimae=dict(dim=64, depth=1, num_heads=1), clip=dict(hidden_size=32, intermediate_size=64,
                                                             num_hidden_layers=2, num_attention_heads=2,
                                                             image_size=32, patch_size=16, projection_dim=16),
        umt5=dict(d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, vocab_size=512), lora_rank=4,
    ),
    "full": dict(
        heads=40, head_dim=128, layers=40, ffn=13824, text_dim=4096, freq_dim=256, vae_base=96, adaptor=128,
        omnimae=dict(dim=768, depth=12, num_heads=12), clip=dict(hidden_size=1280, intermediate_size=5120,
                                                                num_hidden_layers=32, num_attention_heads=16,
                                                                image_size=224, patch_size=14, projection_dim=1024),
        umt5=dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, vocab_size=256384),
        lora_rank=128,
    ),
}
REPOS = ("MoGe4D", "Wan2.1-Fun-V1.1-14B-Control", "Wan2.1-Fun-V1.1-14B-InP")


@torch.no_grad()
def _randomize(module: torch.nn.Module, generator: torch.Generator, device: str | torch.device,
               dtype: torch.dtype = torch.float32) -> None:
    """Give every parameter (meta ones included) N(0, 0.02) values (norm scales near 1) in `dtype` on the CPU,
    drawn on `device`: a meta-built 14B model is filled one tensor at a time, never in fp32 whole."""
    for prefix, sub in module.named_modules():
        for name, p in list(sub._parameters.items()):
            if p is None:
                continue
            value = 0.02 * torch.randn(p.shape, generator=generator, device=device, dtype=torch.float32)
            if p.ndim == 1 and any(n in f"{prefix}.{name}" for n in ("norm", "gamma", "scale")):
                value += 1.0
            sub._parameters[name] = torch.nn.Parameter(value.to("cpu", dtype), requires_grad=False)


def _wan_config(s: dict[str, Any], in_channels: int, image_dim: int) -> dict[str, Any]:
    return dict(patch_size=(1, 2, 2), num_attention_heads=s["heads"], attention_head_dim=s["head_dim"],
                in_channels=in_channels, out_channels=16, text_dim=s["text_dim"], freq_dim=s["freq_dim"],
                ffn_dim=s["ffn"], num_layers=s["layers"], cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                eps=1e-6, image_dim=image_dim, added_kv_proj_dim=s["heads"] * s["head_dim"])


def _original_config(s: dict[str, Any], in_dim: int) -> dict[str, Any]:
    """A Wan-original `config.json` (`WanModel` arguments)."""
    return dict(_class_name="WanModel", model_type="i2v", dim=s["heads"] * s["head_dim"], eps=1e-6, ffn_dim=s["ffn"],
                freq_dim=s["freq_dim"], in_dim=in_dim, num_heads=s["heads"], num_layers=s["layers"], out_dim=16,
                text_len=512)


def _save_sharded(state: dict[str, torch.Tensor], folder: Path, shards: int) -> None:
    """diffusers-style shards `diffusion_pytorch_model-0000k-of-0000n.safetensors` + the index json."""
    keys = sorted(state)
    per = -(-len(keys) // shards)
    weight_map = {}
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k].contiguous() for k in keys[i * per:(i + 1) * per]}
        save_file(part, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    total = sum(v.numel() * v.element_size() for v in state.values())
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))


def _write_moge4d(root: Path, s: dict[str, Any], g: torch.Generator, dtype: torch.dtype, device: str) -> None:
    from more4d.models.motion_features import OmniMAEViT
    from more4d.models.motion_vae import MotionVAE
    from more4d.models.strag_transformer import STraGTransformer
    from more4d.weights.convert_seed import strag_to_seed_state_dict
    from more4d.weights.released import diffusers_to_wan_vae_state

    clip_dim = s["clip"]["hidden_size"]
    with torch.device("meta"):
        strag = STraGTransformer(**_wan_config(s, 64, clip_dim), motion_feature_dim=s["omnimae"]["dim"],
                                 seed_compat=True)
    _randomize(strag, g, device, dtype)
    omnimae = OmniMAEViT(**s["omnimae"])
    _randomize(omnimae, g, device)
    folder = root / layout.STRAG_DIR
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.to(dtype) for k, v in strag_to_seed_state_dict(strag, omnimae).items()}  # no copy in `dtype`
    del strag
    save_file(state, folder / "diffusion_pytorch_model.safetensors")
    del state
    (folder / "config.json").write_text(json.dumps(
        {**_original_config(s, 48), "_class_name": "WanTransformer4DModel", "add_ref_conv": True,
         "use_omnimae_guidance": True}, indent=1))  # in_dim 48 with a 64-channel patch embedding, as released

    mvae = MotionVAE(base_dim=s["vae_base"], adaptor_channels=s["adaptor"], adaptor_groups=32,
                     decoder_inverse_skip=False)
    _randomize(mvae.encoder_adaptor, g, device)
    _randomize(mvae.decoder_adaptor, g, device)
    vae = root / "MoGe4D" / "VAE"
    for sub, state in (
        ("encoder_prompt", _adaptor_state(mvae.encoder_adaptor.state_dict(), "down")),
        ("decoder_prompt", _adaptor_state(mvae.decoder_adaptor.state_dict(), "up")),
        ("vae", {f"model.{k}": v for k, v in diffusers_to_wan_vae_state(mvae.vae.state_dict()).items()}),
    ):
        (vae / sub).mkdir(parents=True, exist_ok=True)
        torch.save(state, vae / sub / "pytorch_model.bin")


def _adaptor_state(state: dict[str, torch.Tensor], side: str) -> dict[str, torch.Tensor]:
    """more4d adaptor names -> the authors' (`blocks.N.` -> `down.0.block.N.` / `up.0.block.N.`)."""
    return {(f"{side}.0.block.{k[len('blocks.'):]}" if k.startswith("blocks.") else k): v for k, v in state.items()}


def _write_control(root: Path, s: dict[str, Any], g: torch.Generator, dtype: torch.dtype, device: str) -> None:
    from diffusers import AutoencoderKLWan
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    from more4d.models.text_encoder import TINY_VOCAB, build_word_tokenizer
    from more4d.weights.released import diffusers_to_wan_vae_state
    from more4d.weights.wan_encoders import clip_vision_to_wan_state_dict, umt5_to_wan_state_dict

    folder = root / "Wan2.1-Fun-V1.1-14B-Control"
    (folder / "google" / "umt5-xxl").mkdir(parents=True, exist_ok=True)
    torch.save(diffusers_to_wan_vae_state(AutoencoderKLWan(base_dim=s["vae_base"]).state_dict()),
               root / layout.WAN_VAE)
    with torch.device("meta"):
        umt5 = UMT5EncoderModel(UMT5Config(**s["umt5"], feed_forward_proj="gated-gelu", dropout_rate=0.0))
    _randomize(umt5, g, device, dtype)
    torch.save(umt5_to_wan_state_dict(umt5), root / layout.UMT5)
    del umt5
    clip = CLIPVisionModel(CLIPVisionConfig(**s["clip"], hidden_act="gelu", layer_norm_eps=1e-5))
    _randomize(clip, g, device)
    text_tower = {"textual.token_embedding.weight": torch.zeros(8, 4), "log_scale": torch.zeros(())}
    torch.save({k: v.to(dtype) for k, v in clip_vision_to_wan_state_dict(clip, text_tower).items()}, root / layout.CLIP)
    # a word-level stand-in for the umT5 sentencepiece tokenizer (ids below the tiny vocabulary size)
    build_word_tokenizer(TINY_VOCAB[: s["umt5"]["vocab_size"] - 16], max_length=512).save_pretrained(
        root / layout.TOKENIZER)


def _write_inp(root: Path, s: dict[str, Any], g: torch.Generator, dtype: torch.dtype, device: str) -> None:
    from diffusers import WanTransformer3DModel

    from more4d.models.lora import ConvertedLoRA, add_lora, to_kohya
    from more4d.models.wan_keys import diffusers_to_original_key

    with torch.device("meta"):
        inp = WanTransformer3DModel(**_wan_config(s, 36, s["clip"]["hidden_size"]))
    _randomize(inp, g, device, dtype)
    folder = root / layout.VISM_BASE
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(_original_config(s, 36), indent=1))
    _save_sharded({diffusers_to_original_key(k): v for k, v in inp.state_dict().items()}, folder, 2)

    from peft import get_peft_model_state_dict

    config = add_lora(inp, rank=s["lora_rank"], alpha=s["lora_rank"] / 2)
    state = {k: 0.02 * torch.randn(v.shape, generator=g, device=device).to("cpu", dtype)
             for k, v in get_peft_model_state_dict(inp, adapter_name="vism").items()}
    lora = root / layout.LORA_FILE
    lora.parent.mkdir(parents=True, exist_ok=True)
    save_file(to_kohya(ConvertedLoRA(state, config), inp), lora)


def write_released_layout(root: str | os.PathLike, *, scale: Literal["tiny", "full"] = "tiny",
                          repos: Iterable[str] = REPOS, seed: int = 0, dtype: torch.dtype = torch.float32,
                          device: str = "cpu") -> Path:
    """Write seeded random weights for `repos` (subfolders of `root` named as `more4d weights download` names
    them). `device` draws the random numbers (a GPU makes the 14B shapes fast). Returns `root`."""
    if scale not in SCALES:
        raise ValueError(f"`scale` must be one of {sorted(SCALES)}, got {scale!r}")
    root, s = Path(root), SCALES[scale]
    writers = {"MoGe4D": _write_moge4d, "Wan2.1-Fun-V1.1-14B-Control": _write_control,
               "Wan2.1-Fun-V1.1-14B-InP": _write_inp}
    for name in repos:
        if name not in writers:
            raise ValueError(f"unknown repository {name!r}; expected some of {REPOS}")
        g = torch.Generator(device).manual_seed(seed + REPOS.index(name))
        writers[name](root, s, g, dtype, device)
    return root
