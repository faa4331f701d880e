"""Load the authors' released MoGe4D weights in their native layout (what `more4d weights download` fetches).

    MoGe4D/                         Hugging Face Yanran21/MoGe4D
      4D-STraG/*.safetensors          4D-STraG transformer (Wan-original names + MPM + ref_conv + frozen OmniMAE)
      4D-ViSM/lora_diffusion_pytorch_model.safetensors   kohya LoRA of the ViSM transformer (merged at 0.55)
      VAE/encoder_prompt/pytorch_model.bin, VAE/decoder_prompt/pytorch_model.bin   motion-VAE adaptors
      VAE/vae/pytorch_model.bin       the Wan VAE with its fine-tuned decoder (`model.` prefixed names)
    Wan2.1-Fun-V1.1-14B-Control/    Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth, google/umt5-xxl/ (tokenizer),
                                    models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth (vision tower used)
    Wan2.1-Fun-V1.1-14B-InP/        config.json + diffusion_pytorch_model*.safetensors (the ViSM base transformer)
    unidepth-v2-vitl14/             UniDepth-V2 ViT-L (needs the optional `unidepth` package)

Every file is read as it is published; keys are converted in memory with strict accounting (nothing is
written to disk). Pickled files load with `torch.load(weights_only=True)`. docs/released_weights.md records
which of the authors' settings more4d follows and where it departs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from more4d.errors import InputError
from more4d.models.motion_features import KeyReport, OmniMAEViT, load_omnimae_state_dict
from more4d.models.motion_vae import MotionVAE
from more4d.models.strag_transformer import STraGTransformer
from more4d.models.wan_keys import read_state_dict
from more4d.weights.convert_seed import OMNIMAE_IN_STRAG, convert_seed_motion_adaptors, convert_seed_strag
from more4d.weights.layout import DECODER_PROMPT, ENCODER_PROMPT, FINETUNED_VAE, ReleasedLayout
from more4d.weights.wan_encoders import read_torch_state_dict

# The trajectory latent statistics of the authors' motion VAE (class constants of their `AutoencoderKLWan`,
# MoGe4D commit 7e3b286): released inference decodes 4D-STraG's latents with them.
TRAJECTORY_MEAN = (
    0.9336646795272827, -1.5638998746871948, 0.09716760367155075, -0.0003718015505000949, -0.4085753560066223,
    2.252105474472046, -1.7826536893844604, 1.4354853630065918, -0.9819669127464294, -0.7372986078262329,
    1.0731526613235474, -1.6012202501296997, -1.4650976657867432, -0.640479326248169, -0.23738965392112732,
    -1.252833604812622,
)
TRAJECTORY_STD = (
    0.4106999933719635, 0.5508000254631042, 0.2565000057220459, 0.3021000027656555, 0.23720000684261322,
    0.5350000262260437, 0.30000001192092896, 0.4359000027179718, 0.20329999923706055, 0.41940000653266907,
    0.21070000529289246, 0.398499995470047, 0.3314000070095062, 0.4097999930381775, 0.3905999958515167,
    0.28630000352859497,
)
ADAPTOR_GROUPS = 32  # the authors' adaptors use GroupNorm(32) at every width

# -- 4D-STraG ----------------------------------------------------------------------------------------------------

def _strag_config(folder: Path) -> dict:
    file = folder / "config.json"
    return json.loads(file.read_text()) if file.is_file() else {}


def load_released_strag(folder: str | os.PathLike, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> STraGTransformer:
    """The 4D-STraG transformer from `4D-STraG/` (all of its `*.safetensors`; widths read from the weights,
    heads from its config.json), every key accounted for; the frozen OmniMAE inside is left to
    `load_released_omnimae`."""
    folder = Path(folder)
    state = {k: v for k, v in read_state_dict(folder).items() if not k.startswith(OMNIMAE_IN_STRAG)}
    model, _, report = convert_seed_strag(state, _strag_config(folder), dtype=dtype)
    report.raise_if_incomplete(f"4D-STraG checkpoint {str(folder)!r}")
    return model.to(device)


def load_released_omnimae(folder: str | os.PathLike, *, device: str | torch.device = "cpu",
                          dtype: torch.dtype = torch.float32, num_heads: int | None = None) -> OmniMAEViT:
    """The MPM's OmniMAE ViT from the `omnimae_extractor.*` tensors of the 4D-STraG checkpoint (read alone,
    without loading the transformer). `num_heads` defaults to width / 64 (ViT-B: 12)."""
    from more4d.weights.convert_seed import omnimae_config_from_state

    folder = Path(folder)
    state: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            state.update({k: f.get_tensor(k) for k in f.keys() if k.startswith(OMNIMAE_IN_STRAG)})
    if not state:
        raise InputError(f"4D-STraG checkpoint {str(folder)!r} carries no OmniMAE weights (`{OMNIMAE_IN_STRAG}*`)")
    config = omnimae_config_from_state(state, OMNIMAE_IN_STRAG)
    if num_heads is not None:
        config["num_heads"] = num_heads
    model = OmniMAEViT(**config)
    load_omnimae_state_dict(model, state, prefix=OMNIMAE_IN_STRAG).raise_if_incomplete(
        f"OmniMAE weights in {str(folder)!r}")
    return torch.nn.Module.to(model, device=device, dtype=dtype)


# -- VAEs --------------------------------------------------------------------------------------------------------

def wan_vae_state_to_diffusers(state: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Wan-original VAE names (`encoder.downsamples...`, optionally `model.` prefixed) -> `AutoencoderKLWan`'s,
    through diffusers' own converter; raises `InputError` unless every key converts."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    state = {k.removeprefix("model."): v for k, v in state.items()}
    converted = convert_wan_vae_to_diffusers(dict(state))
    if len(converted) != len(state):
        raise InputError(f"{what}: {len(state)} Wan VAE tensors converted to {len(converted)}; not a Wan2.1 VAE")
    return converted


def _vae_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """AutoencoderKLWan widths read from a converted state: base width and latent channels."""
    return dict(base_dim=int(state["encoder.conv_in.weight"].shape[0]),
                z_dim=int(state["post_quant_conv.weight"].shape[0]))


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    target = module.state_dict()
    report, loaded = KeyReport(), {}
    for key, value in state.items():
        report.account(key, key, value, target, loaded)
    report.missing = sorted(set(target) - set(loaded))
    report.raise_if_incomplete(what)
    module.load_state_dict(loaded, strict=True)


def load_wan_vae(file: str | os.PathLike, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
    """diffusers `AutoencoderKLWan` from the original `Wan2.1_VAE.pth` (the RGB VAE of the conditions and ViSM)."""
    from diffusers import AutoencoderKLWan

    state = wan_vae_state_to_diffusers(read_torch_state_dict(file), str(file))
    vae = AutoencoderKLWan(**_vae_kwargs(state))
    _load_strict(vae, state, f"Wan VAE {str(file)!r}")
    return torch.nn.Module.to(vae, device=device, dtype=dtype)  # ModelMixin.to warns about fp32 modules


def load_released_motion_vae(layout: ReleasedLayout, *, device: str | torch.device = "cpu",
                             dtype: torch.dtype = torch.float32) -> MotionVAE:
    """The motion VAE: the Wan VAE with the released fine-tuned decoder (`VAE/vae/`), the encoder/decoder
    adaptors (`VAE/encoder_prompt/`, `VAE/decoder_prompt/`) and the trajectory latent normalisation."""
    vae_state = wan_vae_state_to_diffusers(read_torch_state_dict(layout / FINETUNED_VAE), str(layout / FINETUNED_VAE))
    encoder_prompt = read_torch_state_dict(layout / ENCODER_PROMPT)
    decoder_prompt = read_torch_state_dict(layout / DECODER_PROMPT)
    if "conv_in.weight" not in encoder_prompt:
        raise InputError(f"{str(layout / ENCODER_PROMPT)!r} is not a motion-VAE encoder adaptor (no conv_in.weight)")
    model = MotionVAE(
        **_vae_kwargs(vae_state), adaptor_channels=int(encoder_prompt["conv_in.weight"].shape[0]),
        adaptor_groups=ADAPTOR_GROUPS, encoder_adaptor_blocks=_count_blocks(encoder_prompt, "down.0.block."),
        decoder_adaptor_blocks=_count_blocks(decoder_prompt, "up.0.block."), decoder_inverse_skip=False,
        trajectory_mean=TRAJECTORY_MEAN, trajectory_std=TRAJECTORY_STD,
    )
    _load_strict(model.vae, vae_state, f"motion VAE {str(layout / FINETUNED_VAE)!r}")
    convert_seed_motion_adaptors(model, encoder_prompt, decoder_prompt)
    return torch.nn.Module.to(model, device=device, dtype=dtype)  # ModelMixin.to warns about fp32 modules


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


_VAE_RESIDUAL = {"norm1.gamma": "residual.0.gamma", "conv1": "residual.2", "norm2.gamma": "residual.3.gamma",
                 "conv2": "residual.6", "conv_shortcut": "shortcut"}


def _wan_vae_original_key(key: str) -> str:
    """One diffusers `AutoencoderKLWan` key -> its Wan-original name (the inverse of diffusers' converter)."""
    part, _, rest = key.partition(".")
    if part in ("quant_conv", "post_quant_conv"):
        return {"quant_conv": "conv1", "post_quant_conv": "conv2"}[part] + "." + rest
    rest = rest.replace("conv_in.", "conv1.", 1) if rest.startswith("conv_in.") else rest
    rest = re.sub(r"^norm_out\.", "head.0.", rest)
    rest = re.sub(r"^conv_out\.", "head.2.", rest)
    rest = re.sub(r"^mid_block\.resnets\.(\d)\.", lambda m: f"middle.{2 * int(m.group(1))}.", rest)
    rest = rest.replace("mid_block.attentions.0.", "middle.1.")
    m = re.match(r"^up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.(.+)$", rest)
    if m:
        index = 4 * int(m.group(1)) + (int(m.group(3)) if m.group(3) is not None else 3)
        rest = f"upsamples.{index}.{m.group(4)}"
    rest = rest.replace("down_blocks.", "downsamples.")
    for new, old in _VAE_RESIDUAL.items():
        rest = re.sub(rf"^((?:middle|downsamples|upsamples)\.\d+\.){re.escape(new)}(\.|$)", rf"\g<1>{old}\2", rest)
    return f"{part}.{rest}"


def diffusers_to_wan_vae_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An `AutoencoderKLWan` state dict under the Wan-original names of `Wan2.1_VAE.pth`; checked by converting
    back with diffusers' converter (raises `InputError` if any key does not round-trip)."""
    original = {_wan_vae_original_key(k): v for k, v in state.items()}
    back = wan_vae_state_to_diffusers(original, "diffusers_to_wan_vae_state")
    bad = sorted(set(back) ^ set(state))
    if bad:
        raise InputError(f"Wan VAE keys without an original name: {bad[:5]}")
    return original
