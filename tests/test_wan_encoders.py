"""Wan2.1 original-format encoders -> transformers: key accounting, bit-exact round trips, and the semantics of
Wan's T5 / ViT blocks (a reference forward written from Wan's math, run on the Wan-format weights)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

from more4d.errors import InputError
from more4d.weights.wan_encoders import (
    clip_vision_to_wan_state_dict,
    convert_wan_clip_vision_state_dict,
    convert_wan_umt5_state_dict,
    load_wan_clip_vision,
    load_wan_umt5,
    read_torch_state_dict,
    umt5_to_wan_state_dict,
)

# d_kv 6: Wan's dim_attn (24) differs from dim (32), as the mapping must allow
UMT5_CFG = dict(vocab_size=64, d_model=32, d_kv=6, d_ff=48, num_layers=2, num_heads=4,
                relative_attention_num_buckets=32, dropout_rate=0.0)
CLIP_CFG = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                patch_size=16, projection_dim=24, hidden_act="gelu")  # Wan: exact GELU (CLIP default: quick_gelu)
SEQ = 24  # > 8 = the exact-bucket range at 32 buckets: the log buckets are exercised


class Payload:
    """A non-tensor object: weights-only loading must refuse it."""


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module.eval()


@pytest.fixture(scope="module")
def umt5() -> UMT5EncoderModel:
    return randomize(UMT5EncoderModel(UMT5Config(**UMT5_CFG)), 0)


@pytest.fixture(scope="module")
def clip() -> CLIPVisionModel:
    return randomize(CLIPVisionModel(CLIPVisionConfig(**CLIP_CFG)), 1)


def text_tower() -> dict[str, torch.Tensor]:
    return {"textual.token_embedding.weight": torch.randn(10, 8), "textual.blocks.0.attn.q.weight": torch.randn(8, 8),
            "log_scale": torch.tensor(4.6)}


@pytest.fixture
def umt5_file(tmp_path: Path, umt5: UMT5EncoderModel) -> Path:
    torch.save(umt5_to_wan_state_dict(umt5), tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    return tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"


@pytest.fixture
def clip_file(tmp_path: Path, clip: CLIPVisionModel) -> Path:
    path = tmp_path / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
    torch.save(clip_vision_to_wan_state_dict(clip, text_tower()), path)
    return path


def token_batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, UMT5_CFG["vocab_size"], (2, SEQ), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, SEQ, dtype=torch.long)
    mask[1, 15:] = 0  # the second prompt is padded
    return ids, mask


def pixel_batch() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


# ------------------------------------------------------------------------- references written from Wan's math
def wan_t5_buckets(n: int, num_buckets: int, max_dist: int = 128) -> torch.Tensor:
    """Wan `T5RelativeEmbedding._relative_position_bucket` (bidirectional) of `key - query`, `(n, n)`."""
    rel = torch.arange(n)[None, :] - torch.arange(n)[:, None]
    half = num_buckets // 2
    exact = half // 2
    far = exact + (torch.log(rel.abs().float() / exact) / math.log(max_dist / exact) * (half - exact)).long()
    return (rel > 0).long() * half + torch.where(rel.abs() < exact, rel.abs(), far.clamp(max=half - 1))


def wan_t5_reference(sd: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Wan `T5Encoder.forward` (shared_pos=False, eval) on a Wan-format state dict."""
    def rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))

    def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))

    x = sd["token_embedding.weight"][ids]
    b, n, _ = x.shape
    num_blocks = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(num_blocks):
        blk = {k.removeprefix(f"blocks.{i}."): v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        table = blk["pos_embedding.embedding.weight"]  # (buckets, heads)
        heads = table.shape[1]
        bias = table[wan_t5_buckets(n, table.shape[0])].permute(2, 0, 1)[None].expand(b, -1, -1, -1)
        bias = bias.masked_fill(mask[:, None, None, :] == 0, torch.finfo(x.dtype).min)
        h = rms(x, blk["norm1.weight"])
        q, k, v = (F.linear(h, blk[f"attn.{t}.weight"]).view(b, n, heads, -1) for t in "qkv")
        attn = (torch.einsum("binc,bjnc->bnij", q, k) + bias).softmax(-1)  # T5: no 1/sqrt(d) scaling
        x = x + F.linear(torch.einsum("bnij,bjnc->binc", attn, v).reshape(b, n, -1), blk["attn.o.weight"])
        h = rms(x, blk["norm2.weight"])
        ffn = F.linear(h, blk["ffn.fc1.weight"]) * gelu_tanh(F.linear(h, blk["ffn.gate.0.weight"]))
        x = x + F.linear(ffn, blk["ffn.fc2.weight"])
    return rms(x, sd["norm.weight"])


def wan_vit_reference(sd: dict[str, torch.Tensor], pixels: torch.Tensor, heads: int) -> list[torch.Tensor]:
    """Wan `VisionTransformer.forward` (pre-norm, eval): the pre-normed tokens and each block's output; `[-2]` is
    Wan I2V's `use_31_block` output."""
    def ln(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], sd[f"visual.{name}.weight"], sd[f"visual.{name}.bias"], 1e-5)

    def linear(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, sd[f"visual.{name}.weight"], sd[f"visual.{name}.bias"])

    w = sd["visual.patch_embedding.weight"]
    x = F.conv2d(pixels, w, stride=w.shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([sd["visual.cls_embedding"].expand(x.shape[0], -1, -1), x], dim=1) + sd["visual.pos_embedding"]
    b, s, d = x.shape
    states = [ln(x, "pre_norm")]
    num_blocks = len({k.split(".")[2] for k in sd if k.startswith("visual.transformer.")})
    for i in range(num_blocks):
        x, t = states[-1], f"transformer.{i}"
        q, k, v = linear(ln(x, f"{t}.norm1"), f"{t}.attn.to_qkv").view(b, s, 3, heads, -1).unbind(2)
        attn = (torch.einsum("binc,bjnc->bnij", q, k) / math.sqrt(d // heads)).softmax(-1)
        x = x + linear(torch.einsum("bnij,bjnc->binc", attn, v).reshape(b, s, d), f"{t}.attn.proj")
        x = x + linear(F.gelu(linear(ln(x, f"{t}.norm2"), f"{t}.mlp.0")), f"{t}.mlp.2")
        states.append(x)
    return states


# ---------------------------------------------------------------------------------------------------- umT5
def test_umt5_keys_all_accounted(umt5_file: Path) -> None:
    state = read_torch_state_dict(umt5_file)
    target = UMT5EncoderModel(UMT5Config(**UMT5_CFG)).state_dict()
    converted, report = convert_wan_umt5_state_dict(state, target)
    assert report.ok and set(report.mapped) == set(state) and not report.ignored
    assert set(converted) == set(target)
    assert report.mapped["blocks.1.ffn.gate.0.weight"] == "encoder.block.1.layer.1.DenseReluDense.wi_0.weight"


def test_umt5_round_trip_bit_exact(umt5: UMT5EncoderModel, umt5_file: Path) -> None:
    loaded = load_wan_umt5(umt5_file)
    for name in ("d_model", "d_kv", "d_ff", "num_layers", "num_heads", "vocab_size",
                 "relative_attention_num_buckets", "dense_act_fn", "is_gated_act"):
        assert getattr(loaded.config, name) == getattr(umt5.config, name), name
    assert loaded.shared.weight is loaded.encoder.embed_tokens.weight
    assert not loaded.training
    ids, mask = token_batch()
    with torch.no_grad():
        assert torch.equal(loaded(ids, attention_mask=mask).last_hidden_state,
                           umt5(ids, attention_mask=mask).last_hidden_state)


def test_umt5_matches_wan_reference(umt5_file: Path) -> None:
    ids, mask = token_batch()
    with torch.no_grad():
        out = load_wan_umt5(umt5_file)(ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(out, wan_t5_reference(read_torch_state_dict(umt5_file), ids, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_umt5_dtype_as_from_pretrained(umt5_file: Path, dtype: torch.dtype) -> None:
    loaded = load_wan_umt5(umt5_file, dtype=dtype)
    assert loaded.shared.weight is loaded.encoder.embed_tokens.weight
    for name, p in loaded.named_parameters():  # from_pretrained keeps `wo` in float32 under float16 only
        assert p.dtype == (torch.float32 if dtype == torch.float16 and ".wo." in name else dtype), name


# ---------------------------------------------------------------------------------------------------- CLIP
def test_clip_keys_all_accounted(clip_file: Path) -> None:
    state = read_torch_state_dict(clip_file)
    target = CLIPVisionModel(CLIPVisionConfig(**CLIP_CFG)).state_dict()
    converted, report = convert_wan_clip_vision_state_dict(state, target)
    assert report.ok and set(report.mapped) | set(report.ignored) == set(state)
    assert sorted(report.ignored) == sorted([*text_tower(), "visual.head"])
    assert set(converted) == set(target)
    assert report.mapped["visual.transformer.0.attn.to_qkv.bias"] == "encoder.layers.0.self_attn.{q,k,v}_proj.bias"


def test_clip_round_trip_bit_exact(clip: CLIPVisionModel, clip_file: Path) -> None:
    loaded = load_wan_clip_vision(clip_file, num_heads=CLIP_CFG["num_attention_heads"])
    for name, value in CLIP_CFG.items():
        assert getattr(loaded.config, name) == value, name
    pixels = pixel_batch()
    with torch.no_grad():
        got, want = (m(pixel_values=pixels, output_hidden_states=True) for m in (loaded, clip))
    for name in ("last_hidden_state", "pooler_output"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert torch.equal(got.hidden_states[-2], want.hidden_states[-2])


def test_clip_matches_wan_reference(clip_file: Path) -> None:
    heads = CLIP_CFG["num_attention_heads"]
    with torch.no_grad():
        out = load_wan_clip_vision(clip_file, num_heads=heads)(pixel_values=pixel_batch(), output_hidden_states=True)
    ref = wan_vit_reference(read_torch_state_dict(clip_file), pixel_batch(), heads)
    assert len(out.hidden_states) == len(ref)
    for got, want in zip(out.hidden_states, ref, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.last_hidden_state, ref[-1], atol=1e-5, rtol=1e-5)


def test_clip_inverse_rejects_non_text_keys(clip: CLIPVisionModel) -> None:
    with pytest.raises(InputError, match="visual.extra"):
        clip_vision_to_wan_state_dict(clip, {"visual.extra": torch.zeros(1)})


# ------------------------------------------------------------------------------------------ strictness
BROKEN = [  # (which encoder, key to add (with a shape) or drop, expected name in the message)
    ("umt5", "+blocks.0.attn.q.bias", "blocks.0.attn.q.bias"),
    ("umt5", "-blocks.1.ffn.fc2.weight", "encoder.block.1.layer.1.DenseReluDense.wo.weight"),
    ("umt5", "-norm.weight", "encoder.final_layer_norm.weight"),
    ("umt5", "-token_embedding.weight", "token_embedding.weight"),
    ("umt5", "~blocks.0.ffn.fc2.weight", "blocks.0.ffn.fc2.weight"),
    ("clip", "+visual.transformer.0.attn.norm.weight", "visual.transformer.0.attn.norm.weight"),
    ("clip", "+visual.proj", "visual.proj"),
    ("clip", "-visual.transformer.1.attn.to_qkv.bias", "encoder.layers.1.self_attn.k_proj.bias"),
    ("clip", "-visual.post_norm.weight", "post_layernorm.weight"),
    ("clip", "~visual.transformer.0.attn.to_qkv.weight", "visual.transformer.0.attn.to_qkv.weight"),
]


@pytest.mark.parametrize("which,edit,named", BROKEN)
def test_unknown_missing_or_misshapen_key_raises(request: pytest.FixtureRequest, which: str, edit: str,
                                                 named: str) -> None:
    path: Path = request.getfixturevalue(f"{which}_file")
    state = read_torch_state_dict(path)
    op, key = edit[0], edit[1:]
    if op == "+":
        state[key] = torch.zeros(4)
    elif op == "-":
        del state[key]
    else:
        state[key] = state[key][:-1]
    path = path.with_name("edited.pth")  # not over the file `state` is memory-mapped from
    torch.save(state, path)
    load = load_wan_umt5 if which == "umt5" else load_wan_clip_vision
    with pytest.raises(InputError, match=named.replace(".", r"\.").replace("{", r"\{")):
        load(path)


def test_non_tensor_pickle_refused(tmp_path: Path) -> None:
    path = tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
    torch.save({"token_embedding.weight": torch.zeros(4, 2), "payload": Payload()}, path)
    with pytest.raises(InputError, match="weights-only loading refuses.*Payload"):
        load_wan_umt5(path)


@pytest.mark.parametrize("content,message", [(None, "not found"), (b"not a zip", "not a zip-format torch file"),
                                             ([torch.zeros(2)], "must hold a state dict"),
                                             ({"a": 1}, "must map names to tensors")])
def test_unreadable_files_refused(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "enc.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(InputError, match=message):
        read_torch_state_dict(path)
