"""Motion-sensitive VAE: a Wan video VAE that sees the motion field m through two per-frame CNN adaptors.

`encode_motion`: m `(B, 3, T, H, W)` -> encoder adaptor -> bounded pseudo-RGB in [-1, 1] -> Wan encoder ->
normalised latents `(B, 16, t, h, w)`. `decode_motion`: latents -> Wan decoder -> decoder adaptor -> m.
At init the encoder adaptor is exactly `tanh(g m / 2)` and the decoder adaptor its inverse `2 atanh(v) / g`
(docs/method.md, "Motion-sensitive VAE"; gain g = `motion_gain`, 1 there); both are residual CNNs with zero-initialised
output convolutions. A gain > 1 lifts small motions (|m| ~ 0.03-0.2 in the tiny data) above a small VAE's error.
Module names follow the authors' `VAEEncoderadaptor` / `VAEDecoderadaptor` (docs/method.md, "Motion VAE").

Trajectory latent normalisation (the released MoGe4D weights): with `trajectory_mean` / `trajectory_std` set,
motion latents are further normalised per channel, `(z - mean) / std`, after the Wan latent scaling, and
`decode_motion` undoes that first. RGB `encode_video` / `decode_video` never use it.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn as nn
from diffusers import AutoencoderKLWan
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook

from more4d.errors import InputError
from more4d.models.placement import execution_device

ATANH_CLAMP = 1e-4  # pseudo-RGB is clamped to [-1 + c, 1 - c] before the inverse map: |m| <= 2 atanh(1 - c) ~ 9.9


def check_video(x: torch.Tensor, name: str, channels: int = 3) -> None:
    """Raise InputError unless `x` is a floating `(B, channels, T, H, W)` tensor with T = 4k+1, H, W % 8 == 0."""
    if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[1] != channels or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"`{name}` must be a float tensor (B, {channels}, T, H, W), got {shape}")
    t, h, w = x.shape[2:]
    if (t - 1) % 4 or h % 8 or w % 8:
        raise InputError(f"`{name}` needs T = 4k+1 frames and H, W divisible by 8, got T={t}, H={h}, W={w}")


def _latent_stats(vae: AutoencoderKLWan, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = vae.config
    return _stats_tensors(tuple(c.latents_mean), tuple(c.latents_std), like.device, like.dtype)


@functools.lru_cache(maxsize=16)
def _stats_tensors(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent statistics as `(1, z, 1, 1, 1)` tensors, made once per device and dtype: no host-to-device copy
    per call, which a CUDA graph capture of the encoder/decoder forbids."""
    shape = (1, len(mean), 1, 1, 1)
    return (torch.tensor(mean, device=device, dtype=dtype).view(shape),
            torch.tensor(std, device=device, dtype=dtype).view(shape))


def wan_encode(vae: AutoencoderKLWan, video: torch.Tensor) -> torch.Tensor:
    """Encode `video (B, 3, T, H, W)` in [-1, 1] to normalised latents `(B, z, (T-1)/4+1, H/8, W/8)`.

    Deterministic: the posterior mean, then `(z - latents_mean) / latents_std` as diffusers' Wan pipelines do.
    """
    check_video(video, "video")
    z = vae.encode(video.to(execution_device(vae), next(vae.parameters()).dtype)).latent_dist.mode()
    mean, std = _latent_stats(vae, z)
    return (z - mean) / std


def wan_decode(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """Decode normalised `latents (B, z, t, h, w)` to a video `(B, 3, 4(t-1)+1, 8h, 8w)` (unclamped, ~[-1, 1])."""
    if latents.ndim != 5 or latents.shape[1] != vae.config.z_dim:
        raise InputError(f"`latents` must be (B, {vae.config.z_dim}, t, h, w), got {tuple(latents.shape)}")
    latents = latents.to(execution_device(vae), next(vae.parameters()).dtype)
    mean, std = _latent_stats(vae, latents)
    return vae.decode(latents * std + mean).sample


def _check_gain(gain: float) -> None:
    if gain <= 0:
        raise InputError(f"motion_gain must be > 0, got {gain}")


class ChannelScale(nn.Module):
    """Wan's `WanRMS_norm` without the per-pixel normalisation: `gamma * x + bias`, with the same parameters.

    A fresh tiny Wan VAE whose every activation is renormalised per pixel learns to drop motion (it decodes zero
    motion even when trained on nothing else); with per-channel scales instead it learns to carry it
    (docs/method.md, "At tiny scale").
    """

    def __init__(self, norm: WanRMS_norm) -> None:
        super().__init__()
        self.gamma, self.bias = norm.gamma, norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma + self.bias


def drop_rms_norms(module: nn.Module) -> None:
    """Replace every `WanRMS_norm` inside `module` by a `ChannelScale` holding its parameters."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, WanRMS_norm):
                setattr(parent, name, ChannelScale(child))


class ResBlock2d(nn.Module):
    """GroupNorm-SiLU-conv twice with a skip connection (the seed adaptors' `block`)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels, eps=1e-6)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels, eps=1e-6)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        return x + self.conv2(self.act(self.norm2(h)))


class _Adaptor(nn.Module):
    """Per-frame residual CNN `(B, 3, T, H, W) -> (B, 3, T, H, W)`: `base(x) + conv_out(...)`, conv_out zero-init."""

    def __init__(self, channels: int, groups: int, num_blocks: int):
        super().__init__()
        self.conv_in = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock2d(channels, groups) for _ in range(num_blocks))
        self.norm_out = nn.GroupNorm(groups, channels, eps=1e-6)
        self.conv_out = nn.Conv2d(channels, 3, 3, padding=1)
        self.zero_residual()

    def zero_residual(self) -> None:
        """Zero the output convolution: the adaptor becomes exactly its `base` map."""
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def base(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, c, t, hh, ww = video.shape
        frames = video.transpose(1, 2).reshape(b * t, c, hh, ww)
        out = self.base(frames)
        return out.reshape(b, t, c, hh, ww).transpose(1, 2)


class MotionEncoderAdaptor(_Adaptor):
    """m -> pseudo-RGB in [-1, 1]: `2 sigmoid(g x + r(x)) - 1`; equals `tanh(g m / 2)` at init (r = 0)."""

    def __init__(self, channels: int, groups: int, num_blocks: int, gain: float = 1.0):
        super().__init__(channels, groups, num_blocks)
        self.gain = gain

    def base(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.sigmoid(self.gain * x + self.residual(x)) - 1.0


class MotionDecoderAdaptor(_Adaptor):
    """pseudo-RGB -> m: `2 atanh(clamp(v)) / g + r(v)`; the exact inverse of the encoder adaptor at init.

    `inverse_skip=False` drops the atanh term (`m = r(v)`), as the authors' decoder adaptor does.
    """

    def __init__(self, channels: int, groups: int, num_blocks: int, inverse_skip: bool = True, gain: float = 1.0):
        super().__init__(channels, groups, num_blocks)
        self.inverse_skip, self.gain = inverse_skip, gain

    def base(self, x: torch.Tensor) -> torch.Tensor:
        if not self.inverse_skip:
            return self.residual(x)
        # float32: in bf16, 1 - ATANH_CLAMP rounds to 1 and atanh gives inf (seen in bf16 training on an H100)
        v = x.float().clamp(-1.0 + ATANH_CLAMP, 1.0 - ATANH_CLAMP)
        return (2.0 / self.gain * torch.atanh(v)).to(x.dtype) + self.residual(x)


class MotionVAE(ModelMixin, ConfigMixin):
    r"""A Wan video VAE (`self.vae`, diffusers `AutoencoderKLWan`) plus motion encoder/decoder adaptors.

    Args mirror `AutoencoderKLWan` (`base_dim`, `z_dim`, `dim_mult`, `num_res_blocks`, `temperal_downsample`,
    `latents_mean`, `latents_std`) plus the adaptors' width `adaptor_channels`, GroupNorm `adaptor_groups`,
    residual blocks per adaptor, `decoder_inverse_skip` (False for the authors' released adaptors) and the
    adaptors' `motion_gain` (1 as in the method; the tiny preset uses a larger one). `vae_norm="scale"` swaps the
    Wan VAE's per-pixel RMS norms for per-channel scales (`ChannelScale`; the tiny preset); `"rms"` keeps Wan's.
    `trajectory_mean` / `trajectory_std`: the motion latents' own per-channel statistics (module doc), or None.
    Build one around an existing RGB VAE with `MotionVAE.from_vae(vae)` (copies its weights).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        base_dim: int = 96,
        z_dim: int = 16,
        dim_mult: tuple[int, ...] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        temperal_downsample: tuple[bool, ...] = (False, True, True),
        latents_mean: tuple[float, ...] | None = None,
        latents_std: tuple[float, ...] | None = None,
        adaptor_channels: int = 128,
        adaptor_groups: int = 32,
        encoder_adaptor_blocks: int = 1,
        decoder_adaptor_blocks: int = 2,
        decoder_inverse_skip: bool = True,
        motion_gain: float = 1.0,
        vae_norm: Literal["rms", "scale"] = "rms",
        trajectory_mean: tuple[float, ...] | None = None,
        trajectory_std: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        if vae_norm not in ("rms", "scale"):
            raise InputError(f"vae_norm must be 'rms' or 'scale', got {vae_norm!r}")
        if (trajectory_mean is None) != (trajectory_std is None) or (
            trajectory_mean is not None and not len(trajectory_mean) == len(trajectory_std) == z_dim
        ):
            raise InputError(f"trajectory_mean and trajectory_std must both be None or both have z_dim={z_dim} "
                             f"values, got {trajectory_mean!r} and {trajectory_std!r}")
        stats = {}
        if latents_mean is not None:
            stats["latents_mean"] = list(latents_mean)
        if latents_std is not None:
            stats["latents_std"] = list(latents_std)
        self.vae = AutoencoderKLWan(
            base_dim=base_dim, z_dim=z_dim, dim_mult=list(dim_mult), num_res_blocks=num_res_blocks,
            temperal_downsample=list(temperal_downsample), **stats,
        )
        if vae_norm == "scale":
            drop_rms_norms(self.vae)
        _check_gain(motion_gain)
        self.encoder_adaptor = MotionEncoderAdaptor(adaptor_channels, adaptor_groups, encoder_adaptor_blocks,
                                                    motion_gain)
        self.decoder_adaptor = MotionDecoderAdaptor(
            adaptor_channels, adaptor_groups, decoder_adaptor_blocks, decoder_inverse_skip, motion_gain
        )

    def reset_adaptors(self, motion_gain: float) -> None:
        """Set the adaptors' gain and zero their residuals: they become exactly `tanh(g m / 2)` and its inverse."""
        _check_gain(motion_gain)
        self.register_to_config(motion_gain=motion_gain)
        for adaptor in (self.encoder_adaptor, self.decoder_adaptor):
            adaptor.gain = motion_gain
            adaptor.zero_residual()

    @classmethod
    def from_vae(cls, vae: AutoencoderKLWan, **kwargs) -> MotionVAE:
        """A MotionVAE whose Wan VAE is a copy of `vae` (config and weights); fresh adaptors; `kwargs`: the
        MotionVAE's own options (adaptors, `vae_norm`)."""
        c = vae.config
        model = cls(
            base_dim=c.base_dim, z_dim=c.z_dim, dim_mult=tuple(c.dim_mult), num_res_blocks=c.num_res_blocks,
            temperal_downsample=tuple(c.temperal_downsample), latents_mean=tuple(c.latents_mean),
            latents_std=tuple(c.latents_std), **kwargs,
        )
        model.vae.load_state_dict(vae.state_dict())
        return model.to(device=vae.device) if vae.dtype == model.dtype else model.to(vae.device, vae.dtype)

    @apply_forward_hook
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """`video (B, 3, T, H, W)` in [-1, 1] -> normalised latents `(B, z, (T-1)/4+1, H/8, W/8)`."""
        return wan_encode(self.vae, video)

    @apply_forward_hook
    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised `latents (B, z, t, h, w)` -> video `(B, 3, 4(t-1)+1, 8h, 8w)` (about [-1, 1])."""
        return wan_decode(self.vae, latents)

    def normalize_trajectory(self, latents: torch.Tensor) -> torch.Tensor:
        """Wan-scaled latents -> trajectory-normalised latents (identity without trajectory statistics)."""
        c = self.config
        if c.trajectory_mean is None:
            return latents
        mean, std = _stats_tensors(tuple(c.trajectory_mean), tuple(c.trajectory_std), latents.device, latents.dtype)
        return (latents - mean) / std

    def denormalize_trajectory(self, latents: torch.Tensor) -> torch.Tensor:
        """The inverse of `normalize_trajectory`."""
        c = self.config
        if c.trajectory_mean is None:
            return latents
        mean, std = _stats_tensors(tuple(c.trajectory_mean), tuple(c.trajectory_std), latents.device, latents.dtype)
        return latents * std + mean

    @apply_forward_hook
    def encode_motion(self, motion: torch.Tensor) -> torch.Tensor:
        """Normalised motion field `m (B, 3, T, H, W)` -> normalised latents `(B, z, t, h, w)`."""
        check_video(motion, "motion")
        dtype = next(self.parameters()).dtype
        return self.normalize_trajectory(self.encode_video(self.encoder_adaptor(motion.to(execution_device(self), dtype))))

    @apply_forward_hook
    def decode_motion(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised `latents (B, z, t, h, w)` -> motion field `m (B, 3, 4(t-1)+1, 8h, 8w)`."""
        return self.decoder_adaptor(self.decode_video(self.denormalize_trajectory(latents)))
