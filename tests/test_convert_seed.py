"""Seed-checkpoint conversion: synthetic state dicts with the authors' key names at tiny sizes."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from safetensors.torch import save_file

from more4d.errors import InputError
from more4d.models import MotionVAE, OmniMAEViT, STraGTransformer
from more4d.models.wan_keys import load_original_wan_transformer, original_to_diffusers_key
from more4d.weights.convert_seed import (
    SEED_ADAPTOR_CONFIG,
    convert_seed_motion_adaptors,
    convert_seed_strag,
    strag_to_seed_state_dict,
)

CFG = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=64, out_channels=16,
           text_dim=24, freq_dim=32, ffn_dim=48, num_layers=2, image_dim=20, added_kv_proj_dim=32, rope_max_seq_len=32)
SEED_CONFIG = {"in_dim": 48, "dim": 32, "num_heads": 2, "use_omnimae_guidance": True}  # in_dim 48: the quirk
STRAG_EXTRAS = ("spatial_guidance", "feature_adapter", "ref_conv")


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return module


def seed_state(seed: int = 0) -> tuple[STraGTransformer, OmniMAEViT, dict[str, torch.Tensor]]:
    """A tiny model pair and its state dict under the authors' names, OmniMAE's MAE decoder included."""
    model = randomize(STraGTransformer(**CFG, motion_feature_dim=24, seed_compat=True), seed).eval()
    omnimae = randomize(OmniMAEViT(image_size=32, dim=24, depth=2, num_heads=1), seed + 1).eval()
    state = strag_to_seed_state_dict(model, omnimae)
    g = torch.Generator().manual_seed(seed)
    for extra in ("trunk.mask_token", "trunk.decoder.pos_embed", "trunk.decoder.decoder_embed.weight",
                  "trunk.decoder.decoder_blocks.0.attn.qkv.weight", "head.weight", "head.bias"):
        state["omnimae_extractor." + extra] = torch.randn(3, generator=g)
    return model, omnimae, state


def test_seed_names_are_the_authors():
    _, _, state = seed_state()
    for key in ("patch_embedding.weight", "text_embedding.2.bias", "time_projection.1.weight", "img_emb.proj.4.weight",
                "head.modulation", "head.head.weight", "blocks.1.modulation", "blocks.0.self_attn.norm_q.weight",
                "blocks.0.norm3.weight", "blocks.0.cross_attn.k_img.weight", "blocks.1.cross_attn.norm_k_img.weight",
                "blocks.1.ffn.2.weight", "blocks.0.spatial_guidance_self.spatial_guide.1.weight",
                "blocks.1.spatial_guidance_ffn.gate", "feature_adapter.2.bias", "ref_conv.weight",
                "omnimae_extractor.trunk.patch_embed.proj.1.weight", "omnimae_extractor.trunk.blocks.1.mlp.fc2.bias",
                "omnimae_extractor.trunk.pos_embed"):
        assert key in state, key
    assert state["patch_embedding.weight"].shape[1] == 64


def test_base_wan_table_matches_diffusers_converter():
    _, _, state = seed_state()
    base = {k: v for k, v in state.items() if not k.startswith("omnimae_") and not any(s in k for s in STRAG_EXTRAS)}
    official = convert_wan_transformer_to_diffusers(dict(base))
    ours = {original_to_diffusers_key(k): v for k, v in base.items()}
    assert set(ours) == set(official) == set(WanTransformer3DModel(**CFG).state_dict())
    assert all(torch.equal(ours[k], official[k]) for k in ours)


def test_convert_seed_strag_round_trip_and_report():
    model, omnimae, state = seed_state()
    out, out_mae, report = convert_seed_strag(state, SEED_CONFIG)
    assert report.ok and not report.unexpected
    assert len(report.mapped) + len(report.ignored) == len(state)
    assert len(report.ignored) == 6  # the MAE decoder / mask token / head
    assert out.config.in_channels == 64 and out.config.seed_compat and out.config.motion_feature_dim == 24
    assert out.config.image_dim == 20 and out.config.num_attention_heads == 2
    ref = model.state_dict()
    assert set(out.state_dict()) == set(ref)
    assert all(torch.equal(out.state_dict()[k], ref[k]) for k in ref)
    assert all(torch.equal(out_mae.state_dict()[k], v) for k, v in omnimae.state_dict().items())
    again = strag_to_seed_state_dict(out, out_mae)
    assert all(torch.equal(again[k], state[k]) for k in again) and set(state) - set(again) == set(report.ignored)
    # the converted model computes what the source model computes
    x = dict(hidden_states=torch.randn(2, 64, 2, 4, 4), timestep=torch.tensor([900.0, 100.0]),
             encoder_hidden_states=torch.randn(2, 512, 24), encoder_hidden_states_image=torch.randn(2, 3, 20),
             motion_features=torch.randn(2, 24, 3, 3))
    with torch.no_grad():
        assert torch.equal(out(**x).sample, model(**x).sample)


def test_convert_seed_strag_strict_accounting():
    _, _, state = seed_state()
    bad = dict(state, **{"blocks.0.some_new_module.weight": torch.zeros(2)})
    with pytest.raises(InputError, match="unexpected"):
        convert_seed_strag(bad, SEED_CONFIG)
    _, _, report = convert_seed_strag(bad, SEED_CONFIG, strict=False)
    assert report.unexpected == ["blocks.0.some_new_module.weight"]
    short = {k: v for k, v in state.items() if k != "blocks.1.spatial_guidance_ffn.gate"}
    with pytest.raises(InputError, match="missing"):
        convert_seed_strag(short, SEED_CONFIG)
    model, _, report = convert_seed_strag(short, SEED_CONFIG, strict=False)
    assert report.missing == ["blocks.1.motion_norm3.gate"] and model.blocks[1].motion_norm3.gate.abs().sum() == 0
    wrong = dict(state, **{"feature_adapter.0.bias": torch.zeros(5)})
    with pytest.raises(InputError, match="shape"):
        convert_seed_strag(wrong, SEED_CONFIG)
    with pytest.raises(InputError, match="feature_adapter"):
        convert_seed_strag({k: v for k, v in state.items() if not k.startswith("feature_adapter")}, SEED_CONFIG)


def test_omnimae_checkpoint_loading(tmp_path):
    _, omnimae, state = seed_state()
    ckpt = {k.removeprefix("omnimae_extractor."): v for k, v in state.items() if k.startswith("omnimae_extractor.")}
    torch.save(ckpt, tmp_path / "vitb_pretrain.torch")
    loaded = OmniMAEViT.from_omnimae_checkpoint(tmp_path / "vitb_pretrain.torch", image_size=32, dim=24, depth=2, num_heads=1)
    img = torch.rand(2, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(loaded(img), omnimae(img))
    torch.save({k: v for k, v in ckpt.items() if "blocks.1.norm2" not in k}, tmp_path / "short.torch")
    with pytest.raises(InputError, match="missing"):
        OmniMAEViT.from_omnimae_checkpoint(tmp_path / "short.torch", image_size=32, dim=24, depth=2, num_heads=1)
    with pytest.raises(InputError, match="not found"):
        OmniMAEViT.from_omnimae_checkpoint(tmp_path / "nope.torch")


def test_load_original_wan_transformer(tmp_path):
    torch.manual_seed(0)
    cfg = dict(CFG, in_channels=36)
    wan = randomize(WanTransformer3DModel(**cfg), 3).eval()
    from more4d.models.wan_keys import diffusers_to_original_key

    save_file({diffusers_to_original_key(k): v.contiguous() for k, v in wan.state_dict().items()},
              tmp_path / "diffusion_pytorch_model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"dim": 32, "num_heads": 2, "in_dim": 36}))
    loaded = load_original_wan_transformer(tmp_path).eval()
    x = dict(hidden_states=torch.randn(2, 36, 2, 4, 4), timestep=torch.tensor([900.0, 100.0]),
             encoder_hidden_states=torch.randn(2, 512, 24), encoder_hidden_states_image=torch.randn(2, 3, 20))
    with torch.no_grad():
        assert torch.equal(loaded(**x).sample, wan(**x).sample)


def seed_adaptor_state(mvae: MotionVAE, side: str) -> dict[str, torch.Tensor]:
    module = mvae.encoder_adaptor if side == "encoder" else mvae.decoder_adaptor
    prefix = "down.0.block." if side == "encoder" else "up.0.block."
    return {k.replace("blocks.", prefix): torch.randn(v.shape) for k, v in module.state_dict().items()}


def test_convert_seed_motion_adaptors():
    small = dict(SEED_ADAPTOR_CONFIG, adaptor_channels=8, adaptor_groups=4)
    mvae = MotionVAE(base_dim=8, dim_mult=(1, 1, 1, 1), num_res_blocks=1, **small)
    enc, dec = seed_adaptor_state(mvae, "encoder"), seed_adaptor_state(mvae, "decoder")
    assert "down.0.block.0.conv2.weight" in enc and "up.0.block.1.norm1.bias" in dec and "conv_out.bias" in dec
    report = convert_seed_motion_adaptors(mvae, enc, dec)
    assert len(report.mapped) == len(enc) + len(dec)
    assert torch.equal(mvae.decoder_adaptor.blocks[1].conv1.weight, dec["up.0.block.1.conv1.weight"])
    with pytest.raises(InputError, match="unexpected"):
        convert_seed_motion_adaptors(mvae, dict(enc, extra=torch.zeros(1)), dec)
