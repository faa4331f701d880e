"""The 4D-STraG trajectory transformer: diffusers' Wan DiT + the Motion Perception Module (MPM) and MAdaNorm.

Input channels (64) = noisy motion latent 16 | image-condition latent 16 | start-frame slot 16 | depth latent 16
(docs/method.md, "4D-STraG"). The MPM refines extractor features `(B, C, hf, wf)` with a conv adapter, resizes them to
the token grid and feeds every block: MAdaNorm modulates the AdaLN-normalised input of self-attention and of the
FFN, `h <- h (1 + g s) + g b` with `[s, b] = Linear(SiLU(f))` and a per-channel gate `g` initialised to 0, so a
fresh STraGTransformer computes exactly the stock Wan forward. Features are the same on every latent frame, so
`Linear(SiLU(f))` runs once per spatial token and broadcasts over frames (the seed code ran it on every token).

`pooled_text=True` (off in the released configs) adds a global caption path: the mean of the caption's token
embeddings, through a zero-initialised Linear, joins the timestep embedding that drives every AdaLN modulation, so
the caption can steer all tokens without the cross-attention having to find its words. Zero at init, it leaves
trained weights' outputs unchanged (`with_pooled_text`).

`seed_compat=True` reproduces the authors' released model (docs/method.md, "4D-STraG transformer"): reference tokens from
`ref_conv` (zeros unless `ref_latents` is given) are prepended as an extra latent frame, and the features cover
only as many frames as the latents: they modulate the reference frame and latent frames 0..t-2, and the last
latent frame is not modulated (the authors' code pads the features at the end of the sequence).
"""

from __future__ import annotations

import warnings
from typing import Any

import diffusers
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import WanTransformer3DModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  pipelines find the load method through it
from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from diffusers.utils import apply_lora_scale

from more4d.errors import InputError

LATENT_CHANNELS = 16
WAN_BLOCK_DIFFUSERS = "0.42"  # the diffusers release line whose Wan block forward STraGTransformerBlock follows
STRAG_IN_CHANNELS = 4 * LATENT_CHANNELS  # noisy | image condition | start slot | depth

# Wan2.1-I2V-14B layout as the authors' STraG uses it (docs/method.md, "4D-STraG transformer"), MPM on OmniMAE ViT-B features.
WAN_14B_STRAG_CONFIG: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=STRAG_IN_CHANNELS,
    out_channels=LATENT_CHANNELS, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120, rope_max_seq_len=1024,
    motion_feature_dim=768,
)
# The embedded default (docs/contracts.md "Tiny configuration").
TINY_STRAG_CONFIG: dict[str, Any] = dict(
    WAN_14B_STRAG_CONFIG, num_attention_heads=4, attention_head_dim=64, text_dim=128, ffn_dim=768, num_layers=6,
    image_dim=None, added_kv_proj_dim=None, motion_feature_dim=128,
)


class MotionPerceptionModule(nn.Module):
    """Conv adapter (3x3 conv, SiLU, 3x3 conv) on extractor features, resized to the DiT token grid.

    `forward(features (B, C, hf, wf), grid (h', w')) -> (B, h'*w', C)` row-major spatial tokens; the transformer
    broadcasts them over latent frames (equal to repeating them: `(B, t*h'*w', C)`).
    """

    def __init__(self, feature_dim: int):
        super().__init__()
        self.adapter = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim, 3, padding=1), nn.SiLU(), nn.Conv2d(feature_dim, feature_dim, 3, padding=1)
        )

    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        f = self.adapter(features)
        f = F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
        return f.flatten(2).transpose(1, 2)


class MAdaNorm(nn.Module):
    """Motion-adaptive modulation `h <- h (1 + g s) + g b`, `[s, b] = Linear(SiLU(f))`, gate `g` zero-init.

    Only the gate starts at zero: were the Linear zero as well, neither would ever get a gradient.
    """

    def __init__(self, feature_dim: int, dim: int):
        super().__init__()
        self.linear = nn.Linear(feature_dim, 2 * dim)
        self.gate = nn.Parameter(torch.zeros(dim))

    def forward(self, hidden_states: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """`hidden_states (B, F*P, D)`, `motion (B, 1 | F, P, C)` = SiLU(features) -> `(B, F*P, D)`.

        Tokens whose features are exactly zero are padding and pass through unmodulated (seed-compat pads the last
        latent frame so; the mask travels with `motion` when context parallelism splits the sequence).
        """
        b, n, d = hidden_states.shape
        scale, shift = (self.linear(motion) * self.gate.repeat(2)).chunk(2, dim=-1)
        real = (motion != 0).any(dim=-1, keepdim=True).to(scale.dtype)
        scale, shift = scale * real, shift * real
        h = hidden_states.view(b, -1, motion.shape[2], d)
        return torch.addcmul(shift, h, 1 + scale).view(b, n, d)


def check_wan_block_version(version: str = diffusers.__version__) -> bool:
    """Whether `version` of diffusers is the release line `STraGTransformerBlock.forward` follows; warns if not."""
    follows = ".".join(version.split(".")[:2]) == WAN_BLOCK_DIFFUSERS
    if not follows:
        warnings.warn(f"STraGTransformerBlock re-implements the Wan block forward of diffusers {WAN_BLOCK_DIFFUSERS}.x; "
                      f"with diffusers {version} check that it still matches (tests/test_models_strag.py)", stacklevel=2)
    return follows


class STraGTransformerBlock(WanTransformerBlock):
    """A stock `WanTransformerBlock` plus two MAdaNorms (before self-attention and before the FFN).

    Without `motion` it is the parent's forward. With it, `forward` re-implements diffusers'
    `WanTransformerBlock.forward` (release line `WAN_BLOCK_DIFFUSERS`) step for step with the parent's submodules and
    inserts the two modulations (Wan2.1 `temb (B, 6, D)` only); with the MPM at rest the two agree bit for bit
    (tests/test_models_strag.py), and another diffusers release line is warned about at construction.
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, qk_norm: str | None, cross_attn_norm: bool,
                 eps: float, added_kv_proj_dim: int | None, motion_feature_dim: int):
        check_wan_block_version()
        super().__init__(dim, ffn_dim, num_heads, qk_norm, cross_attn_norm, eps, added_kv_proj_dim)
        self.motion_norm1 = MAdaNorm(motion_feature_dim, dim)
        self.motion_norm3 = MAdaNorm(motion_feature_dim, dim)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor,
                rotary_emb: tuple[torch.Tensor, torch.Tensor], motion: torch.Tensor | None = None) -> torch.Tensor:
        if motion is None:
            return super().forward(hidden_states, encoder_hidden_states, temb, rotary_emb)
        shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = (
            self.scale_shift_table + temb.float()
        ).chunk(6, dim=1)

        # 1. Self-attention (AdaLN, then MAdaNorm)
        norm_hidden_states = (self.norm1(hidden_states.float()) * (1 + scale_msa) + shift_msa).type_as(hidden_states)
        norm_hidden_states = self.motion_norm1(norm_hidden_states, motion)
        attn_output = self.attn1(norm_hidden_states, None, None, rotary_emb)
        hidden_states = (hidden_states.float() + attn_output * gate_msa).type_as(hidden_states)

        # 2. Cross-attention
        norm_hidden_states = self.norm2(hidden_states.float()).type_as(hidden_states)
        attn_output = self.attn2(norm_hidden_states, encoder_hidden_states, None, None)
        hidden_states = hidden_states + attn_output

        # 3. Feed-forward (AdaLN, then MAdaNorm)
        norm_hidden_states = (self.norm3(hidden_states.float()) * (1 + c_scale_msa) + c_shift_msa).type_as(
            hidden_states
        )
        norm_hidden_states = self.motion_norm3(norm_hidden_states, motion)
        ff_output = self.ffn(norm_hidden_states)
        return (hidden_states.float() + ff_output.float() * c_gate_msa).type_as(hidden_states)


class STraGTransformer(WanTransformer3DModel):
    r"""Wan DiT over `[noisy | image cond | start slot | depth]` latents with the MPM (docs/method.md, "4D-STraG").

    Args: those of `WanTransformer3DModel` (defaults: the 14B I2V layout with 64 input channels) plus
    `motion_feature_dim` (C of the extractor features: 768 for OmniMAE ViT-B) and `seed_compat` (see module doc).
    """

    _no_split_modules = ["STraGTransformerBlock"]
    _repeated_blocks = ["STraGTransformerBlock"]

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 40,
        attention_head_dim: int = 128,
        in_channels: int = STRAG_IN_CHANNELS,
        out_channels: int = LATENT_CHANNELS,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 13824,
        num_layers: int = 40,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
        motion_feature_dim: int = 768,
        seed_compat: bool = False,
        pooled_text: bool = False,
    ) -> None:
        # The parent builds everything but the blocks (num_layers=0); its config registration is undone below.
        super().__init__(
            patch_size=patch_size, num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim,
            in_channels=in_channels, out_channels=out_channels, text_dim=text_dim, freq_dim=freq_dim,
            ffn_dim=ffn_dim, num_layers=0, cross_attn_norm=cross_attn_norm, qk_norm=qk_norm, eps=eps,
            image_dim=image_dim, added_kv_proj_dim=added_kv_proj_dim, rope_max_seq_len=rope_max_seq_len,
            pos_embed_seq_len=pos_embed_seq_len,
        )
        self.register_to_config(num_layers=num_layers)
        inner_dim = num_attention_heads * attention_head_dim
        self.blocks = nn.ModuleList(
            STraGTransformerBlock(inner_dim, ffn_dim, num_attention_heads, qk_norm, cross_attn_norm, eps,
                                  added_kv_proj_dim, motion_feature_dim)
            for _ in range(num_layers)
        )
        self.motion_perception = MotionPerceptionModule(motion_feature_dim)
        self.text_pool = None
        if pooled_text:
            self.text_pool = nn.Linear(text_dim, inner_dim)
            nn.init.zeros_(self.text_pool.weight)
            nn.init.zeros_(self.text_pool.bias)
        self.ref_conv = None
        if seed_compat:
            self.ref_conv = nn.Conv2d(out_channels, inner_dim, kernel_size=patch_size[1:], stride=patch_size[1:])

    @classmethod
    def from_wan(cls, wan: WanTransformer3DModel, *, in_channels: int = STRAG_IN_CHANNELS,
                 motion_feature_dim: int = 768) -> STraGTransformer:
        """A STraGTransformer with a pretrained Wan's weights; extra input channels and the MPM at identity.

        The output equals `wan`'s for the same first input channels, whatever the extra channels hold.
        """
        config = {k: v for k, v in wan.config.items() if not k.startswith("_")}
        config.update(in_channels=in_channels, motion_feature_dim=motion_feature_dim)
        param = next(wan.parameters())
        model = cls(**config).to(device=param.device, dtype=param.dtype)
        state = dict(wan.state_dict())
        state["patch_embedding.weight"] = _zero_pad_in_channels(state["patch_embedding.weight"], in_channels)
        missing, unexpected = model.load_state_dict(state, strict=False)
        new = ("motion_perception.", "motion_norm1.", "motion_norm3.")
        if unexpected or any(not any(n in k for n in new) for k in missing):
            raise InputError(f"`wan` does not match STraGTransformer: missing {missing}, unexpected {unexpected}")
        return model

    @classmethod
    def with_pooled_text(cls, model: STraGTransformer) -> STraGTransformer:
        """A copy of `model` with the pooled caption path added (zero, so its outputs are `model`'s)."""
        if model.text_pool is not None:
            return model
        config = {k: v for k, v in model.config.items() if not k.startswith("_")}
        param = next(model.parameters())
        new = cls(**{**config, "pooled_text": True}).to(device=param.device, dtype=param.dtype)
        missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
        if unexpected or any(not k.startswith("text_pool.") for k in missing):
            raise InputError(f"cannot add pooled_text: missing {missing}, unexpected {unexpected}")
        return new

    @apply_lora_scale("attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        motion_features: torch.Tensor | None = None,
        encoder_hidden_states_image: torch.Tensor | None = None,
        ref_latents: torch.Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """Predict the flow-matching velocity.

        Args:
            hidden_states: `(B, in_channels, t, h, w)` latents `[noisy | image cond | start slot | depth]`.
            timestep: `(B,)` flow-matching timesteps in [0, 1000].
            encoder_hidden_states: `(B, L, text_dim)` text embeddings.
            motion_features: `(B, motion_feature_dim, hf, wf)` raw extractor features, or None (no MPM).
            encoder_hidden_states_image: `(B, 257, image_dim)` CLIP tokens when `image_dim` is set.
            ref_latents: `(B, out_channels, h, w)` seed-compat reference latent (default zeros, as the seed trained).
        Returns:
            `sample (B, out_channels, t, h, w)`.
        """
        self._check_inputs(hidden_states, timestep, motion_features)
        batch_size, _, num_frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        post_patch_num_frames, grid = num_frames // p_t, (height // p_h, width // p_w)

        # 1. Patch embedding and rotary embedding (seed-compat: reference tokens form an extra first frame)
        hidden_states_in = hidden_states
        hidden_states = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2)
        num_ref_tokens = 0
        if self.ref_conv is not None:
            if ref_latents is None:
                ref_latents = hidden_states.new_zeros(batch_size, self.ref_conv.in_channels, height, width)
            ref_tokens = self.ref_conv(ref_latents.to(hidden_states.dtype)).flatten(2).transpose(1, 2)
            num_ref_tokens = ref_tokens.shape[1]
            hidden_states = torch.cat([ref_tokens, hidden_states], dim=1)
            hidden_states_in = hidden_states_in[:, :, :1].expand(-1, -1, num_frames + p_t, -1, -1)
        rotary_emb = self.rope(hidden_states_in)
        hidden_states = hidden_states.contiguous()

        # 2. Time, text and image conditions (+ the pooled caption, into the timestep embedding)
        text = encoder_hidden_states
        temb, timestep_proj, encoder_hidden_states, encoder_hidden_states_image = self.condition_embedder(
            timestep, encoder_hidden_states, encoder_hidden_states_image
        )
        if self.text_pool is not None:
            valid = (text.abs().amax(-1, keepdim=True) > 0).to(text.dtype)  # padding tokens are exactly zero
            pooled = (text * valid).sum(1) / valid.sum(1).clamp_min(1)
            temb = temb + self.text_pool(pooled.to(self.text_pool.weight.dtype)).type_as(temb)
            timestep_proj = self.condition_embedder.time_proj(self.condition_embedder.act_fn(temb))
        timestep_proj = timestep_proj.unflatten(1, (6, -1))
        if encoder_hidden_states_image is not None:
            encoder_hidden_states = torch.concat([encoder_hidden_states_image, encoder_hidden_states], dim=1)

        # 3. Motion Perception Module: SiLU(features) per spatial token (B, 1, h'*w', C), shared by all blocks
        motion = None
        if motion_features is not None:
            # compute dtype, not the adapter weights': under fp8 layerwise casting those are stored as float8
            motion = self.motion_perception(motion_features.to(hidden_states.device, hidden_states.dtype), grid)
            motion = motion.unsqueeze(1)
            motion = F.silu(motion).to(hidden_states.dtype)
            if self.ref_conv is not None:  # seed: [f on t frames | zero padding], against [ref frame | t frames]
                motion = torch.cat([motion.expand(-1, post_patch_num_frames, -1, -1), torch.zeros_like(motion)], 1)

        # 4. Transformer blocks
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(
                    block, hidden_states, encoder_hidden_states, timestep_proj, rotary_emb, motion
                )
            else:
                hidden_states = block(hidden_states, encoder_hidden_states, timestep_proj, rotary_emb, motion)
        hidden_states = hidden_states[:, num_ref_tokens:]

        # 5. Output norm, projection and unpatchify
        shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        shift, scale = shift.to(hidden_states.device), scale.to(hidden_states.device)
        hidden_states = (self.norm_out(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)
        hidden_states = self.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch_size, post_patch_num_frames, *grid, p_t, p_h, p_w, -1)
        output = hidden_states.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    def _check_inputs(self, hidden_states: torch.Tensor, timestep: torch.Tensor,
                      motion_features: torch.Tensor | None) -> None:
        c = self.config
        if hidden_states.ndim != 5 or hidden_states.shape[1] != c.in_channels:
            raise InputError(f"`hidden_states` must be (B, {c.in_channels}, t, h, w), got {tuple(hidden_states.shape)}")
        _, _, t, h, w = hidden_states.shape
        if t % c.patch_size[0] or h % c.patch_size[1] or w % c.patch_size[2]:
            raise InputError(f"latent size (t, h, w) = {(t, h, w)} must be divisible by patch {tuple(c.patch_size)}")
        if timestep.ndim != 1 or timestep.shape[0] != hidden_states.shape[0]:
            raise InputError(f"`timestep` must be ({hidden_states.shape[0]},), got {tuple(timestep.shape)}")
        if motion_features is not None and (
            motion_features.ndim != 4 or motion_features.shape[:2] != (hidden_states.shape[0], c.motion_feature_dim)
        ):
            raise InputError(
                f"`motion_features` must be (B={hidden_states.shape[0]}, {c.motion_feature_dim}, hf, wf), "
                f"got {tuple(motion_features.shape)}"
            )


def _zero_pad_in_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Patch-embedding weight `(D, C, *k)` -> `(D, in_channels, *k)`, new input channels zero."""
    if in_channels < weight.shape[1]:
        raise InputError(f"cannot narrow a patch embedding from {weight.shape[1]} to {in_channels} input channels")
    pad = weight.new_zeros(weight.shape[0], in_channels - weight.shape[1], *weight.shape[2:])
    return torch.cat([weight, pad], dim=1)


@torch.no_grad()
def widen_patch_embedding(model: WanTransformer3DModel, in_channels: int) -> WanTransformer3DModel:
    """Widen `model.patch_embedding` in place to `in_channels`; new input channels are zero (output unchanged)."""
    old = model.patch_embedding
    new = nn.Conv3d(in_channels, old.out_channels, old.kernel_size, old.stride).to(old.weight.device, old.weight.dtype)
    new.weight.copy_(_zero_pad_in_channels(old.weight, in_channels))
    new.bias.copy_(old.bias)
    model.patch_embedding = new
    model.register_to_config(in_channels=in_channels)
    return model
