"""ViSM LoRA: peft adapters on every Linear, safetensors save/load, exact merge/unmerge, kohya conversion."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from peft.tuners.lora import LoraLayer
from safetensors.torch import save_file

from more4d.errors import InputError
from more4d.models.lora import (
    add_lora,
    convert_kohya_lora,
    kohya_name,
    kohya_table,
    linear_module_names,
    load_lora,
    merge_lora,
    save_lora,
    to_kohya,
    unmerge_lora,
)
from more4d.models.vism import WAN_FUN_14B_INP_CONFIG, build_tiny_vism_components, build_vism_transformer


@functools.cache
def _base_transformer():
    return build_tiny_vism_components(seed=0)["transformer"]


def tiny_transformer(dtype=torch.float32):
    """A fresh copy of the seeded tiny ViSM transformer."""
    return copy.deepcopy(_base_transformer()).to(dtype)


def inputs(batch: int = 2):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(batch, 36, 2, 4, 4, generator=g), torch.tensor([300, 700][:batch]),
            torch.randn(batch, 512, 128, generator=g), torch.randn(batch, 50, 128, generator=g))


def forward(model, args):
    with torch.no_grad():
        return model(*args, return_dict=False)[0]


SEED_BLOCK_TARGETS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
                      "cross_attn.v", "cross_attn.o", "cross_attn.k_img", "cross_attn.v_img", "ffn.0", "ffn.2")
SEED_TOP_TARGETS = ("text_embedding.0", "text_embedding.2", "time_embedding.0", "time_embedding.2",
                    "time_projection.1", "head.head", "img_emb.proj.1", "img_emb.proj.3")


def seed_targets(num_layers: int) -> list[str]:
    """The original-Wan modules of the authors' ViSM LoRA (docs/method.md, "4D-ViSM LoRA")."""
    return [f"blocks.{i}.{m}" for i in range(num_layers) for m in SEED_BLOCK_TARGETS] + list(SEED_TOP_TARGETS)


def kohya_state(num_layers: int = 6, rank: int = 4, alpha: float = 2.0, seed: int = 0) -> dict[str, torch.Tensor]:
    """A synthetic authors'-format LoRA for the tiny ViSM transformer (shapes from its diffusers twin)."""
    from more4d.models.wan_keys import original_to_diffusers_key

    modules = dict(tiny_transformer().named_modules())
    g = torch.Generator().manual_seed(seed)
    out = {}
    for orig in seed_targets(num_layers):
        lin = modules[original_to_diffusers_key(orig + ".weight").removesuffix(".weight")]
        name = kohya_name(orig)
        out[f"{name}.lora_down.weight"] = torch.randn(rank, lin.in_features, generator=g)
        out[f"{name}.lora_up.weight"] = torch.randn(lin.out_features, rank, generator=g) * 0.1
        out[f"{name}.alpha"] = torch.tensor(alpha)
    return out


def test_targets_are_every_linear():
    model = tiny_transformer()
    assert len(linear_module_names(model)) == 6 * 12 + 8
    assert sorted(kohya_table(model)) == sorted(kohya_name(m) for m in seed_targets(6))
    full = build_vism_transformer(WAN_FUN_14B_INP_CONFIG, device="meta")
    assert sorted(kohya_table(full)) == sorted(kohya_name(m) for m in seed_targets(40))  # the seed's 488
    config = add_lora(model, rank=8, alpha=4)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    assert config.r == 8 and len(wrapped) == 80
    # B starts at zero: the adapter is an identity at init
    torch.testing.assert_close(forward(model, inputs()), forward(tiny_transformer(), inputs()))


def test_save_load_round_trip(tmp_path):
    model = tiny_transformer()
    add_lora(model, rank=4, alpha=2, init_lora_weights=False)
    path = save_lora(model, tmp_path / "lora.safetensors")
    fresh = tiny_transformer()
    config = load_lora(fresh, path)
    assert config.r == 4 and config.lora_alpha == 2
    torch.testing.assert_close(forward(fresh, inputs()), forward(model, inputs()), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merge_then_unmerge_restores_weights_exactly(dtype):
    model = tiny_transformer(dtype)
    add_lora(model, rank=4, alpha=2, init_lora_weights=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layer = model.blocks[1].attn2.add_k_proj
    expected = (layer.base_layer.weight.float()
                + 0.55 * 0.5 * layer.lora_B["vism"].weight.float() @ layer.lora_A["vism"].weight.float()).to(dtype)
    merge_lora(model, 0.55)
    torch.testing.assert_close(layer.base_layer.weight, expected)
    with pytest.raises(InputError, match="already merged"):
        merge_lora(model)
    unmerge_lora(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not layer.disable_adapters  # adapters active again
    with pytest.raises(InputError, match="no LoRA is merged"):
        unmerge_lora(model)


def test_merged_forward_matches_scaled_adapter():
    model = tiny_transformer()
    add_lora(model, rank=4, alpha=2, init_lora_weights=False)
    args = inputs()
    model.set_adapters(["vism"], weights=[0.55])  # unmerged adapter at weight 0.55
    ref = forward(model, args)
    model.set_adapters(["vism"], weights=[1.0])
    merge_lora(model, 0.55)
    torch.testing.assert_close(forward(model, args), ref, rtol=1e-4, atol=1e-4)


def test_kohya_round_trip_and_merge_rule(tmp_path):
    state = kohya_state()
    model = tiny_transformer()
    converted = convert_kohya_lora(state, model)
    assert converted.config.r == 4 and converted.config.lora_alpha == 2.0 and len(converted.state_dict) == 160
    back = to_kohya(converted, model)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)

    save_file(state, str(tmp_path / "checkpoint-100.safetensors"))
    base = tiny_transformer()
    load_lora(model, tmp_path / "checkpoint-100.safetensors")
    merge_lora(model, 0.55)
    # the seed's merge rule: W += 0.55 * (alpha / r) * (up @ down), in fp32
    name = kohya_name("blocks.2.cross_attn.v_img")
    delta = 0.55 * (2.0 / 4) * state[f"{name}.lora_up.weight"] @ state[f"{name}.lora_down.weight"]
    torch.testing.assert_close(model.blocks[2].attn2.add_v_proj.base_layer.weight,
                               base.blocks[2].attn2.add_v_proj.weight + delta)


def test_kohya_strict_key_accounting():
    model = tiny_transformer()
    state = kohya_state()
    with pytest.raises(InputError, match="unknown keys"):
        convert_kohya_lora({**state, "lora_unet__blocks_0_self_attn_zz.lora_down.weight": torch.zeros(4, 4)}, model)
    partial = {k: v for k, v in state.items() if not k.startswith(kohya_name("head.head"))}
    with pytest.raises(InputError, match="not covered"):
        convert_kohya_lora(partial, model)
    assert len(convert_kohya_lora(partial, model, strict=False).state_dict) == 158
    no_up = {k: v for k, v in state.items() if k != kohya_name("ffn.0") and "blocks_0_ffn_0.lora_up" not in k}
    with pytest.raises(InputError, match="needs lora_down.weight and lora_up.weight"):
        convert_kohya_lora(no_up, model)
    bad = dict(state)
    bad[f"{kohya_name('blocks.0.self_attn.q')}.lora_down.weight"] = torch.zeros(4, 7)
    with pytest.raises(InputError, match="do not fit"):
        convert_kohya_lora(bad, model)


def test_bad_inputs(tmp_path):
    model = tiny_transformer()
    with pytest.raises(InputError, match="rank"):
        add_lora(model, rank=0)
    with pytest.raises(InputError, match="does not exist"):
        load_lora(model, tmp_path / "missing.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InputError, match="cannot tell its rank"):
        load_lora(model, tmp_path / "other.safetensors")
    with pytest.raises(InputError, match="no LoRA adapter"):
        merge_lora(model)
