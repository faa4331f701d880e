"""Builders of the 4D-STraG components from config (random weights): the tiny default and the paper's scale.

Both return `{"vae", "motion_vae", "tokenizer", "text_encoder", "transformer", "motion_encoder"}`: the names of
`STraGPipeline`'s components and of the preset folders (docs/contracts.md "Tiny configuration").
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKLWan

from more4d.models.motion_features import OmniMAEViT, TinyMotionEncoder
from more4d.models.motion_vae import MotionVAE
from more4d.models.strag_transformer import (
    LATENT_CHANNELS,
    TINY_STRAG_CONFIG,
    WAN_14B_STRAG_CONFIG,
    STraGTransformer,
)
from more4d.models.text_encoder import (
    TINY_VOCAB,
    UMT5_MAX_LENGTH,
    build_word_tokenizer,
    tiny_text_encoder_for,
)

# Tiny Wan VAE: speed on the 2-core CPU is the same for base_dim 8 and 16 (frame-caching overhead dominates; 12 is
# slower), so the smallest that fits the 32 MB budget: 0.22M params (bench/RESULTS.md "STraG models").
TINY_VAE_CONFIG: dict[str, Any] = dict(
    base_dim=8, z_dim=LATENT_CHANNELS, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
    temperal_downsample=[False, True, True], latents_mean=[0.0] * LATENT_CHANNELS,
    latents_std=[1.0] * LATENT_CHANNELS,
)
# The tiny MotionVAE's own options. Its adaptors run per frame at full resolution, so they are narrow: 16 channels,
# one decoder block (the seed's 128 channels x 2 blocks would cost more than the whole tiny VAE decoder on a CPU).
# Its Wan VAE has per-channel scales instead of per-pixel RMS norms: with them a fresh tiny VAE decodes no motion.
TINY_MOTION_VAE_CONFIG: dict[str, Any] = dict(adaptor_channels=16, adaptor_groups=4, decoder_adaptor_blocks=1,
                                              vae_norm="scale")
TINY_TEXT_MAX_LENGTH = 32
# umT5-XXL encoder (Wan2.1 text encoder)
UMT5_XXL_CONFIG: dict[str, Any] = dict(
    vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
    dense_act_fn="gelu_new", is_gated_act=True,
)


def build_tiny_strag_components(seed: int = 0) -> dict[str, Any]:
    """The embedded default's STraG components with seeded random weights (fp32, CPU)."""
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**TINY_VAE_CONFIG)
    tokenizer = build_word_tokenizer(TINY_VOCAB, max_length=TINY_TEXT_MAX_LENGTH)
    return dict(
        vae=vae,
        motion_vae=MotionVAE.from_vae(vae, **TINY_MOTION_VAE_CONFIG),
        tokenizer=tokenizer,
        text_encoder=tiny_text_encoder_for(tokenizer, text_dim=TINY_STRAG_CONFIG["text_dim"]),
        transformer=STraGTransformer(**TINY_STRAG_CONFIG),
        motion_encoder=TinyMotionEncoder(feature_dim=TINY_STRAG_CONFIG["motion_feature_dim"]),
    )


def build_tiny_motion_vae(seed: int = 0) -> MotionVAE:
    """The embedded default's MotionVAE with seeded random weights of its own (fp32, CPU)."""
    torch.manual_seed(seed)
    return MotionVAE(**TINY_VAE_CONFIG, **TINY_MOTION_VAE_CONFIG)


def build_full_strag_components(device: str | torch.device = "meta") -> dict[str, Any]:
    """Paper-scale components (Wan2.1 VAE, umT5-XXL, 14B STraG, OmniMAE ViT-B) built on `device`.

    With the default meta device nothing is allocated: call `.to_empty(device=...)` and initialise. The
    tokenizer is a word-level stand-in (the real umT5 tokenizer comes from a local folder).
    """
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device(device):
        vae = AutoencoderKLWan()
        return dict(
            vae=vae,
            motion_vae=MotionVAE(),
            tokenizer=build_word_tokenizer(TINY_VOCAB, max_length=UMT5_MAX_LENGTH),
            text_encoder=UMT5EncoderModel(UMT5Config(**UMT5_XXL_CONFIG)),
            transformer=STraGTransformer(**WAN_14B_STRAG_CONFIG),
            motion_encoder=OmniMAEViT(),
        )
