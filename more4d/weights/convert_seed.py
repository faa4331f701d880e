"""Load the authors' released MoRe4D STraG checkpoint (Wan-original names, docs/method.md, "4D-STraG transformer") into more4d.

The saved transformer holds the base Wan keys (`more4d.models.wan_keys`), the MPM (`feature_adapter.0/.2`,
per block `spatial_guidance_self` / `spatial_guidance_ffn`), `ref_conv`, and the frozen OmniMAE
(`omnimae_extractor.trunk.*`). Every key is accounted for in a `ConversionReport`: mapped, ignored (known and
unused: OmniMAE's MAE decoder and mask token), unexpected, or (target side) missing. Quirk: the released
config says `in_dim` 48 while `patch_embedding` has 64 input channels: widths are read from the weights.
The motion-VAE adaptors (`encoder_prompt` / `decoder_prompt`, §3) convert with `convert_seed_motion_adaptors`.

    python -m more4d.weights.convert_seed CHECKPOINT_DIR OUT_DIR [--num-heads 40]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from more4d.errors import InputError
from more4d.models.motion_features import KeyReport, OmniMAEViT, load_omnimae_state_dict, omnimae_key
from more4d.models.motion_vae import MotionVAE
from more4d.models.strag_transformer import STraGTransformer
from more4d.models.wan_keys import (
    diffusers_config_from_original,
    diffusers_to_original_key,
    finish_meta_model,
    original_to_diffusers_key,
    read_state_dict,
)

ConversionReport = KeyReport

# STraG additions to the base Wan tables (original -> more4d)
STRAG_TOP_KEYS: dict[str, str] = {
    "feature_adapter.0": "motion_perception.adapter.0",
    "feature_adapter.2": "motion_perception.adapter.2",
    "ref_conv": "ref_conv",
}
STRAG_BLOCK_KEYS: dict[str, str] = {
    "spatial_guidance_self.spatial_guide.1": "motion_norm1.linear",
    "spatial_guidance_self.gate": "motion_norm1.gate",
    "spatial_guidance_ffn.spatial_guide.1": "motion_norm3.linear",
    "spatial_guidance_ffn.gate": "motion_norm3.gate",
}
OMNIMAE_IN_STRAG = "omnimae_extractor."


def seed_to_strag_key(key: str) -> str | None:
    """Authors' STraG key -> STraGTransformer key (None: not a transformer key, e.g. OmniMAE)."""
    return original_to_diffusers_key(key, STRAG_TOP_KEYS, STRAG_BLOCK_KEYS)


def strag_to_seed_key(key: str) -> str | None:
    """STraGTransformer key -> the authors' name."""
    return diffusers_to_original_key(key, STRAG_TOP_KEYS, STRAG_BLOCK_KEYS)


def strag_config_from_seed(state_dict: dict[str, torch.Tensor], seed_config: dict | None = None) -> dict:
    """STraGTransformer kwargs from the authors' weights (+ their config.json for `num_heads` and `eps`)."""
    config = diffusers_config_from_original(seed_config or {}, state_dict)
    if "feature_adapter.0.weight" not in state_dict:
        raise InputError("not a MoRe4D STraG checkpoint: no `feature_adapter.0.weight` (the MPM adapter)")
    config.update(motion_feature_dim=int(state_dict["feature_adapter.0.weight"].shape[0]),
                  seed_compat="ref_conv.weight" in state_dict)
    return config


def convert_seed_strag(state_dict: dict[str, torch.Tensor], seed_config: dict | None = None, *,
                       dtype: torch.dtype = torch.float32, strict: bool = True,
                       ) -> tuple[STraGTransformer, OmniMAEViT | None, ConversionReport]:
    """Build a `STraGTransformer` (seed_compat when `ref_conv` is present) and the OmniMAE extractor (if the
    checkpoint carries it) from the authors' state dict; with `strict`, raise `InputError` unless every key maps."""
    config = strag_config_from_seed(state_dict, seed_config)  # before the meta-device scope (reads shapes)
    with torch.device("meta"):
        model = STraGTransformer(**config)
    report, converted = ConversionReport(), {}
    target = model.state_dict()
    omnimae_keys = {k: v for k, v in state_dict.items() if k.startswith(OMNIMAE_IN_STRAG)}
    for key, value in state_dict.items():
        if key in omnimae_keys:
            continue
        report.account(key, seed_to_strag_key(key), value, target, converted)
    report.missing = sorted(set(target) - set(converted))
    if strict:
        report.raise_if_incomplete("MoRe4D STraG checkpoint")
    converted.update({name: torch.zeros(target[name].shape) for name in report.missing})  # non-strict: zero
    model.load_state_dict(converted, strict=True, assign=True)
    model = finish_meta_model(model, dtype=dtype, device="cpu")

    omnimae = None
    if omnimae_keys:
        omnimae = OmniMAEViT(**omnimae_config_from_state(omnimae_keys, OMNIMAE_IN_STRAG))
        sub = load_omnimae_state_dict(omnimae, omnimae_keys, prefix=OMNIMAE_IN_STRAG)
        if strict:
            sub.raise_if_incomplete("OmniMAE weights in the MoRe4D STraG checkpoint")
        report = report.merge(sub)
        for param in omnimae.parameters():
            param.data = param.data.to(dtype)
    return model, omnimae, report


def omnimae_config_from_state(state: dict[str, torch.Tensor], prefix: str = "") -> dict:
    """OmniMAEViT kwargs (dim, depth, patch size, frames, image size) read from OmniMAE weights.

    The position table covers 8 frames of a square token grid (OmniMAE ViT-B: 8 x 14 x 14 = 1568).
    """
    pe = state[prefix + "trunk.patch_embed.proj.1.weight"]  # (D, 3, frames, p, p)
    grid = round((state[prefix + "trunk.pos_embed"].shape[1] / 8) ** 0.5)
    depth = len({int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"trunk\.blocks\.(\d+)\.", k))})
    dim = int(pe.shape[0])
    return dict(dim=dim, depth=depth, num_heads=max(1, dim // 64), num_frames=int(pe.shape[2]),
                patch_size=int(pe.shape[3]), image_size=grid * int(pe.shape[3]))


def strag_to_seed_state_dict(model: STraGTransformer, omnimae: OmniMAEViT | None = None) -> dict[str, torch.Tensor]:
    """The inverse mapping: a STraGTransformer (+ OmniMAE) as the authors' state dict (OmniMAE decoder omitted)."""
    out = {}
    for key, value in model.state_dict().items():
        name = strag_to_seed_key(key)
        if name is None:
            raise InputError(f"STraGTransformer key {key!r} has no original name")
        out[name] = value
    if omnimae is not None:
        inverse = {omnimae_key(k): k for k in _omnimae_original_keys(omnimae)}
        for key, value in omnimae.state_dict().items():
            out[OMNIMAE_IN_STRAG + inverse[key]] = value
    return out


def _omnimae_original_keys(model: OmniMAEViT) -> list[str]:
    c = model.config
    keys = ["trunk.patch_embed.proj.1.weight", "trunk.patch_embed.proj.1.bias", "trunk.pos_embed",
            "trunk.norm.weight", "trunk.norm.bias"]
    for i in range(c.depth):
        for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys += [f"trunk.blocks.{i}.{m}.weight", f"trunk.blocks.{i}.{m}.bias"]
    return keys


# -- motion VAE adaptors (docs/method.md, "Motion VAE") -----------------------------------------------------------------

SEED_ADAPTOR_CONFIG = dict(adaptor_channels=128, adaptor_groups=32, encoder_adaptor_blocks=1,
                           decoder_adaptor_blocks=2, decoder_inverse_skip=False)


def _adaptor_key(key: str, side: str) -> str | None:
    """`down.0.block.0.conv1.weight` (encoder) / `up.0.block.1.norm2.bias` (decoder) -> `blocks.N....`."""
    m = re.match(rf"^{'down' if side == 'encoder' else 'up'}\.0\.block\.(\d+)\.(.+)$", key)
    if m:
        return f"blocks.{m.group(1)}.{m.group(2)}"
    return key if key.split(".")[0] in ("conv_in", "norm_out", "conv_out") else None


def convert_seed_motion_adaptors(motion_vae: MotionVAE, encoder_prompt: dict[str, torch.Tensor],
                                 decoder_prompt: dict[str, torch.Tensor]) -> ConversionReport:
    """Load the authors' `encoder_prompt` / `decoder_prompt` state dicts into `motion_vae`'s adaptors, strictly.

    `motion_vae` must be built with `SEED_ADAPTOR_CONFIG` (the authors' decoder adaptor has no inverse skip).
    """
    report = ConversionReport()
    for side, state, module in (("encoder", encoder_prompt, motion_vae.encoder_adaptor),
                                ("decoder", decoder_prompt, motion_vae.decoder_adaptor)):
        target, loaded = module.state_dict(), {}
        for key, value in state.items():
            name = _adaptor_key(key, side)
            if name is None or name not in target or target[name].shape != value.shape:
                report.unexpected.append(f"{side}_prompt.{key}")
                continue
            report.mapped[f"{side}_prompt.{key}"] = f"{side}_adaptor.{name}"
            loaded[name] = value
        report.missing += [f"{side}_adaptor.{k}" for k in sorted(set(target) - set(loaded))]
        module.load_state_dict(loaded, strict=False)
    report.raise_if_incomplete("MoRe4D motion-VAE adaptors")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="authors' transformer folder (*.safetensors), .safetensors or torch file")
    parser.add_argument("out", help="output folder: strag/transformer and strag/motion_encoder are written")
    parser.add_argument("--num-heads", type=int, default=None, help="attention heads (default: config.json or dim/128)")
    args = parser.parse_args(argv)
    ckpt = Path(args.checkpoint)
    cfg_file = (ckpt if ckpt.is_dir() else ckpt.parent) / "config.json"
    seed_config = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    if args.num_heads:
        seed_config["num_heads"] = args.num_heads
    model, omnimae, report = convert_seed_strag(read_state_dict(ckpt), seed_config, dtype=torch.bfloat16)
    out = Path(args.out)
    model.save_pretrained(out / "strag" / "transformer")
    if omnimae is not None:
        omnimae.save_pretrained(out / "strag" / "motion_encoder")
    print(f"mapped {len(report.mapped)} keys, ignored {len(report.ignored)} (OmniMAE decoder), wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["ConversionReport", "SEED_ADAPTOR_CONFIG", "convert_seed_motion_adaptors", "convert_seed_strag",
           "seed_to_strag_key", "strag_config_from_seed", "strag_to_seed_key", "strag_to_seed_state_dict"]
