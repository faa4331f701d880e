"""STraG models: motion VAE, STraG transformer (MPM + MAdaNorm), feature extractors, text encoder."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import AutoTokenizer

from more4d.errors import InputError
from more4d.models import (
    MotionVAE,
    OmniMAEViT,
    STraGTransformer,
    TinyMotionEncoder,
    TinyTextEncoder,
    build_word_tokenizer,
    encode_prompt,
    widen_patch_embedding,
)
from more4d.models.text_encoder import MAX_PROMPT_CHARS, TINY_VOCAB

WAN = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, out_channels=16, text_dim=24,
           freq_dim=32, ffn_dim=48, num_layers=2, rope_max_seq_len=32)
FEAT = 12


def strag(**kw) -> STraGTransformer:
    torch.manual_seed(0)
    return STraGTransformer(**{**WAN, "in_channels": 64, "motion_feature_dim": FEAT, **kw}).eval()


def inputs(batch: int = 2, channels: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(batch, channels, 3, 8, 6, generator=g),
                timestep=torch.tensor([700.0, 30.0][:batch]),
                encoder_hidden_states=torch.randn(batch, 7, 24, generator=g))


def feats(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, FEAT, 5, 5, generator=torch.Generator().manual_seed(seed))


def run(model, **kw) -> torch.Tensor:
    with torch.no_grad():
        return model(**kw, return_dict=False)[0]


def randomize_mpm(model: STraGTransformer) -> None:
    with torch.no_grad():
        for block in model.blocks:
            for m in (block.motion_norm1, block.motion_norm3):
                m.gate.normal_()


def test_strag_shapes_and_mpm_identity_at_init():
    model = strag()
    stock = WanTransformer3DModel(**{**WAN, "in_channels": 64}).eval()
    missing, unexpected = stock.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all("motion" in k for k in unexpected)
    x = inputs()
    out = run(model, **x, motion_features=feats())
    assert out.shape == (2, 16, 3, 8, 6)
    assert torch.equal(out, run(stock, **x))  # gate 0: exactly the stock Wan forward
    assert torch.equal(out, run(model, **x))  # and the no-MPM path
    randomize_mpm(model)
    assert not torch.allclose(run(model, **x, motion_features=feats()), out)


def test_wan_block_version_guard():
    from more4d.models.strag_transformer import WAN_BLOCK_DIFFUSERS, check_wan_block_version

    assert check_wan_block_version(f"{WAN_BLOCK_DIFFUSERS}.9")
    with pytest.warns(UserWarning, match="re-implements the Wan block forward"):
        assert not check_wan_block_version("0.99.0")


def test_mpm_runs_under_fp8_layerwise_casting():
    """low_vram stores the transformer's weights in float8: the MPM must compute in the activations' dtype."""
    model = strag()
    randomize_mpm(model)
    x = inputs()
    ref = run(model, **x, motion_features=feats())
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    assert model.motion_perception.adapter[0].weight.dtype == torch.float8_e4m3fn
    out = run(model, **x, motion_features=feats())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().mean() < 0.1 * ref.abs().mean()  # fp8 rounding of the weights only


def test_mpm_trainable_at_init_and_gradient_checkpointing():
    model = strag().train()
    x = inputs()
    model(**x, motion_features=feats()).sample.square().mean().backward()
    gate = model.blocks[0].motion_norm1.gate.grad
    assert gate is not None and gate.abs().sum() > 0  # only the gate is zero: the Linear gets gradient through it
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.enable_gradient_checkpointing()
    model(**x, motion_features=feats()).sample.square().mean().backward()
    for n, p in model.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6)


def test_features_are_constant_over_frames_and_seed_compat_offset():
    model = strag()
    randomize_mpm(model)
    tokens = model.motion_perception(feats(), (4, 3))
    assert tokens.shape == (2, 12, FEAT)
    compat = strag(seed_compat=True)
    compat.load_state_dict(model.state_dict(), strict=False)
    randomize_mpm(compat)
    x = inputs()
    out = run(compat, **x, motion_features=feats())
    assert out.shape == (2, 16, 3, 8, 6)
    ref = torch.randn(2, 16, 8, 6)
    assert not torch.allclose(run(compat, **x, motion_features=feats(), ref_latents=ref), out)


def test_widened_patch_embedding_preserves_pretrained_output():
    torch.manual_seed(0)
    wan = WanTransformer3DModel(**{**WAN, "in_channels": 48}).eval()
    x48 = inputs(channels=48)
    base = run(wan, **x48)
    extra = torch.randn(2, 16, 3, 8, 6)
    x64 = dict(x48, hidden_states=torch.cat([x48["hidden_states"], extra], 1))
    model = STraGTransformer.from_wan(wan, motion_feature_dim=FEAT).eval()
    torch.testing.assert_close(run(model, **x64, motion_features=feats()), base, rtol=0, atol=1e-6)
    widen_patch_embedding(wan, 64)
    assert wan.config.in_channels == 64
    torch.testing.assert_close(run(wan, **x64), base, rtol=0, atol=1e-6)


def test_strag_save_load_roundtrip(tmp_path):
    model = strag(seed_compat=True)
    randomize_mpm(model)
    model.save_pretrained(tmp_path / "t")
    again = STraGTransformer.from_pretrained(tmp_path / "t").eval()
    assert again.config.num_layers == 2 and again.config.seed_compat and len(again.blocks) == 2
    x = inputs()
    assert torch.equal(run(model, **x, motion_features=feats()), run(again, **x, motion_features=feats()))


def test_pooled_text_starts_as_identity_then_steers_by_caption(tmp_path):
    model = strag()
    randomize_mpm(model)
    pooled = STraGTransformer.with_pooled_text(model).eval()
    x = inputs()
    torch.testing.assert_close(run(pooled, **x, motion_features=feats()), run(model, **x, motion_features=feats()),
                               rtol=0, atol=0)  # zero-initialised: the trained weights' outputs are kept
    with torch.no_grad():
        pooled.text_pool.weight.normal_()
    other = dict(x, encoder_hidden_states=x["encoder_hidden_states"].clone())
    other["encoder_hidden_states"][:, 3:] = 0  # a shorter caption (padding is zero): its mean differs
    assert not torch.allclose(run(pooled, **x), run(pooled, **other))
    padded = dict(x, encoder_hidden_states=torch.cat([x["encoder_hidden_states"], torch.zeros(2, 5, 24)], 1))
    with torch.no_grad():  # padding does not change the pooled caption (cross-attention still sees it)
        for block in pooled.blocks:
            block.attn2.to_out[0].weight.zero_()
            block.attn2.to_out[0].bias.zero_()
    torch.testing.assert_close(run(pooled, **x), run(pooled, **padded))
    pooled.save_pretrained(tmp_path / "p")
    again = STraGTransformer.from_pretrained(tmp_path / "p").eval()
    assert again.config.pooled_text and torch.equal(run(again, **x), run(pooled, **x))


def test_strag_bad_inputs():
    model = strag()
    x = inputs()
    with pytest.raises(InputError, match="hidden_states"):
        run(model, **dict(x, hidden_states=x["hidden_states"][:, :48]))
    with pytest.raises(InputError, match="divisible"):
        run(model, **dict(x, hidden_states=x["hidden_states"][..., :5]))
    with pytest.raises(InputError, match="timestep"):
        run(model, **dict(x, timestep=torch.tensor(3.0)))
    with pytest.raises(InputError, match="motion_features"):
        run(model, **x, motion_features=torch.randn(2, FEAT + 1, 4, 4))


# -- motion VAE ---------------------------------------------------------------------------------------------------

def tiny_vae() -> AutoencoderKLWan:
    torch.manual_seed(0)
    return AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            latents_mean=[0.1 * i for i in range(16)], latents_std=[1.0 + i for i in range(16)]).eval()


def test_motion_vae_adaptors_and_latents(tmp_path):
    vae = tiny_vae()
    mvae = MotionVAE.from_vae(vae, adaptor_channels=8, adaptor_groups=4).eval()
    m = torch.randn(2, 3, 1, 16, 24)  # T = 4*0 + 1: the Wan VAE is slow per frame on CPU
    with torch.no_grad():
        pseudo = mvae.encoder_adaptor(m)
        torch.testing.assert_close(pseudo, torch.tanh(m / 2), rtol=0, atol=1e-6)
        torch.testing.assert_close(mvae.decoder_adaptor(pseudo), m, rtol=0, atol=2e-3)
        z = mvae.encode_motion(m)
        raw = vae.encode(pseudo).latent_dist.mode()
        mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std).view(1, 16, 1, 1, 1)
        torch.testing.assert_close(z, (raw - mean) / std)
        assert z.shape == (2, 16, 1, 2, 3)
        video = mvae.decode_video(z)
        torch.testing.assert_close(video, vae.decode(raw).sample)
        torch.testing.assert_close(mvae.decoder_adaptor(video), mvae.decode_motion(z))
    mvae.save_pretrained(tmp_path / "mv")
    again = MotionVAE.from_pretrained(tmp_path / "mv").eval()
    with torch.no_grad():
        assert torch.equal(again.encode_motion(m), z)


def test_motion_vae_gain_and_reset_adaptors(tmp_path):
    """A gain g makes the adaptors tanh(g m / 2) and its inverse; reset_adaptors zeroes trained residuals."""
    mvae = MotionVAE.from_vae(tiny_vae(), adaptor_channels=8, adaptor_groups=4, motion_gain=8.0).eval()
    m = 0.1 * torch.randn(1, 3, 1, 16, 24)
    with torch.no_grad():
        pseudo = mvae.encoder_adaptor(m)
        torch.testing.assert_close(pseudo, torch.tanh(4 * m), rtol=0, atol=1e-6)
        torch.testing.assert_close(mvae.decoder_adaptor(pseudo), m, rtol=0, atol=1e-4)
        mvae.encoder_adaptor.conv_out.weight.normal_()  # as after training
        mvae.reset_adaptors(2.0)
        torch.testing.assert_close(mvae.encoder_adaptor(m), torch.tanh(m), rtol=0, atol=1e-6)
    mvae.save_pretrained(tmp_path / "mv")
    assert MotionVAE.from_pretrained(tmp_path / "mv").decoder_adaptor.gain == 2.0
    with pytest.raises(InputError, match="motion_gain"):
        mvae.reset_adaptors(0.0)


def test_motion_vae_scale_norm_keeps_parameters(tmp_path):
    """vae_norm="scale" swaps every per-pixel RMS norm for gamma * x (same weights, no normalisation)."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

    from more4d.models.motion_vae import ChannelScale

    rms = MotionVAE.from_vae(tiny_vae(), adaptor_channels=8, adaptor_groups=4).eval()
    scale = MotionVAE.from_vae(tiny_vae(), adaptor_channels=8, adaptor_groups=4, vae_norm="scale").eval()
    assert not any(isinstance(m, WanRMS_norm) for m in scale.modules())
    assert sum(isinstance(m, ChannelScale) for m in scale.modules()) == sum(
        isinstance(m, WanRMS_norm) for m in rms.modules())
    assert rms.state_dict().keys() == scale.state_dict().keys()
    x = 0.3 * torch.randn(1, 3, 5, 16, 16)
    norm = next(m for m in scale.modules() if isinstance(m, ChannelScale))
    with torch.no_grad():
        torch.testing.assert_close(norm(x[:, :, 0]), x[:, :, 0] * norm.gamma)
        z = scale.encode_motion(x)
        assert not torch.allclose(z, rms.encode_motion(x))
    scale.save_pretrained(tmp_path / "mv")
    again = MotionVAE.from_pretrained(tmp_path / "mv").eval()
    assert again.config.vae_norm == "scale"
    with torch.no_grad():
        assert torch.equal(again.encode_motion(x), z)
    with pytest.raises(InputError, match="vae_norm"):
        MotionVAE(base_dim=8, dim_mult=(1, 1, 1, 1), num_res_blocks=1, vae_norm="layer")


def test_motion_vae_methods_trigger_the_offload_hook():
    """Pipelines call encode_*/decode_* (not forward): model CPU offload must still move the model in."""
    from accelerate.hooks import ModelHook, add_hook_to_module

    class Count(ModelHook):
        calls = 0

        def pre_forward(self, module, *args, **kwargs):
            Count.calls += 1
            return args, kwargs

    mvae = MotionVAE.from_vae(tiny_vae(), adaptor_channels=8, adaptor_groups=4).eval()
    add_hook_to_module(mvae, Count())
    with torch.no_grad():
        mvae.decode_motion(mvae.encode_motion(torch.zeros(1, 3, 1, 16, 16)))
    assert Count.calls >= 2


def test_motion_vae_bad_inputs():
    mvae = MotionVAE.from_vae(tiny_vae(), adaptor_channels=8, adaptor_groups=4)
    with pytest.raises(InputError, match="4k\\+1"):
        mvae.encode_motion(torch.zeros(2, 3, 4, 16, 16))
    with pytest.raises(InputError, match="divisible by 8"):
        mvae.encode_video(torch.zeros(2, 3, 5, 12, 16))
    with pytest.raises(InputError, match="motion"):
        mvae.encode_motion(torch.zeros(2, 2, 5, 16, 16))
    with pytest.raises(InputError, match="latents"):
        mvae.decode_motion(torch.zeros(2, 4, 2, 2, 2))


# -- feature extractors and text ----------------------------------------------------------------------------------

def test_feature_extractors_shapes_and_save_load(tmp_path):
    torch.manual_seed(0)
    tiny = TinyMotionEncoder(feature_dim=FEAT, channels=(8, 8, 8, 8)).eval()
    img = torch.rand(2, 3, 64, 48)
    out = tiny(img)
    assert out.shape == (2, FEAT, 4, 3)
    tiny.save_pretrained(tmp_path / "me")
    assert torch.equal(TinyMotionEncoder.from_pretrained(tmp_path / "me")(img), out)
    vit = OmniMAEViT(image_size=32, dim=24, depth=1, num_heads=2).eval()
    assert vit(img).shape == (2, 24, 2, 2)
    with pytest.raises(InputError, match="image"):
        tiny(torch.rand(2, 4, 32, 32))


def test_text_encoder_tokenizer_and_prompts(tmp_path):
    tok = build_word_tokenizer(TINY_VOCAB, max_length=8)
    ids = tok(["A red ball, bounces LEFT!"])["input_ids"][0]
    assert tok.convert_ids_to_tokens(ids) == ["a", "red", "ball", ",", "bounces", "left", "!", "[EOS]"]
    tok.save_pretrained(tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(tmp_path / "tok", local_files_only=True)
    assert again(["a red ball"])["input_ids"] == tok(["a red ball"])["input_ids"]
    torch.manual_seed(0)
    enc = TinyTextEncoder(vocab_size=len(tok), max_length=8, dim=16, num_layers=1, num_heads=2, ffn_dim=32,
                          text_dim=24).eval()
    with torch.no_grad():
        e = encode_prompt(tok, enc, ["a red ball moves left", ""])
        assert e.shape == (2, 8, 24)
        assert e[1, 1:].abs().sum() == 0 and e[1, 0].abs().sum() > 0  # "" is just [EOS]: valid, unconditional
        torch.testing.assert_close(encode_prompt(again, enc, [b"a red ball moves left"]), e[:1])
        with pytest.warns(UserWarning, match="truncated"):
            assert encode_prompt(tok, enc, ["a " * 20]).shape == (1, 8, 24)
    enc.save_pretrained(tmp_path / "te")
    with torch.no_grad():
        torch.testing.assert_close(encode_prompt(tok, TinyTextEncoder.from_pretrained(tmp_path / "te"), [""]), e[1:])
    for bad, msg in ([b"\xff\xfe"], "UTF-8"), (["\udc80"], "UTF-8"), (["a" * (MAX_PROMPT_CHARS + 1)], "characters"), \
            ([], "empty"), ([3], "string"):
        with pytest.raises(InputError, match=msg):
            encode_prompt(tok, enc, bad)


def test_motion_decoder_adaptor_is_finite_in_bf16_at_saturation():
    """Regression: in bf16, 1 - ATANH_CLAMP rounds to 1, so a bf16 atanh gave inf losses on the H100."""
    from more4d.models.motion_vae import MotionDecoderAdaptor

    adaptor = MotionDecoderAdaptor(channels=16, groups=4, num_blocks=1).to(torch.bfloat16)
    v = torch.tensor([-1.5, -1.0, -0.9999, 0.0, 0.9999, 1.0, 1.5], dtype=torch.bfloat16).view(1, 1, 7, 1, 1)
    out = adaptor(v.expand(2, 3, 7, 2, 2).contiguous())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
