"""Helpers shared by the session-5 diagnostics: a fresh motion VAE, the 9x32x32 validation set, its track errors,
the moving-weighted motion loss, dense random videos, and the VAE ablations (`ABLATIONS`)."""

import math
import sys
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanResample

sys.path.insert(0, "train")
from _lib.data import motion_targets

from more4d.data.synth import SynthConfig, generate_batch
from more4d.eval.metrics import track_epe
from more4d.geometry import denormalize_motion, video_to_motion
from more4d.weights import load_components

CONFIG = SynthConfig(num_frames=9, height=32, width=32, novel_views=0)


@torch.no_grad()
def init_temporal_identity(vae):
    n = 0
    for mod in vae.modules():
        if isinstance(mod, WanResample) and hasattr(mod, "time_conv"):
            w = mod.time_conv.weight
            w.zero_()
            mod.time_conv.bias.zero_()
            c_in = w.shape[1]
            eye = torch.eye(c_in)
            for k in range(w.shape[0] // c_in):
                w[k * c_in : (k + 1) * c_in, :, -1, 0, 0] = eye
            n += 1
    for mod in vae.modules():
        if isinstance(mod, WanCausalConv3d) and mod.kernel_size[0] > 1 and mod.kernel_size[1] > 1:
            w = mod.weight
            kt = w.shape[2]
            w[:, :, -1] *= math.sqrt(kt)
            w[:, :, :-1] = 0
            n += 1
    return n


@torch.no_grad()
def init_kaiming(vae):
    n = 0
    for mod in vae.modules():
        if isinstance(mod, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
            n += 1
    return n


def patch_no_rmsnorm(vae=None):
    """Ablation (of the class, so of every Wan VAE): WanRMS_norm becomes gamma * x + bias (no per-pixel channel normalisation)."""
    from diffusers.models.autoencoders import autoencoder_kl_wan as w

    def forward(self, x):
        return x * self.gamma + self.bias

    w.WanRMS_norm.forward = forward
    return 1


def dense(B, T=9, H=32, W=32, g=None):
    """Dense random videos in [-0.8, 0.8]: independent 4x4 fields per frame and channel, upsampled trilinearly."""
    low = torch.rand(B, 3, T, 4, 4, generator=g) * 1.6 - 0.8
    return F.interpolate(low, size=(T, H, W), mode="trilinear", align_corners=True)


ABLATIONS = {
    "tinit": init_temporal_identity,
    "init_kaiming": init_kaiming,
    "patch_no_rmsnorm": patch_no_rmsnorm,
}


def fresh_motion_vae(src, ablation=None):
    """The motion VAE of weight folder `src` in fp32, trainable, adaptors reset to gain 8; `ablation` from ABLATIONS."""
    mv = load_components("tiny", src, only=("motion_vae",))["motion_vae"].float().train().requires_grad_(True)
    mv.reset_adaptors(8.0)
    if ablation:
        print(ablation, ABLATIONS[ablation](mv.vae))
    return mv


def validation_set():
    """16 held-out clips at 9x32x32 with their motion targets and moving-track mask."""
    val = generate_batch(range(999999000, 999999016), CONFIG, "cpu")
    m, vis, valid, alphas = motion_targets(val)
    return SimpleNamespace(
        batch=val, m=m, vis=vis, valid=valid, alphas=alphas, moving=m.abs().amax(dim=(1, 2)) > 1e-4
    )


def track_errors(r, vs):
    """(moving, static) track EPE in metres of a decoded motion video `r` on the validation set `vs`."""
    pts = vs.batch.points
    pred = torch.stack(
        [denormalize_motion(video_to_motion(r[i]), pts[i, 0], vs.alphas[i]) for i in range(len(r))]
    )
    return tuple(
        float(track_epe(pred, pts, vs.vis.flatten(2), vs.valid & k.flatten(1)).nanmean())
        for k in (vs.moving, ~vs.moving)
    )


def decode_errors(mv, vs):
    with torch.no_grad():
        return track_errors(mv.decode_motion(mv.encode_motion(vs.m)).float(), vs)


def train_motion(step):
    """Motion targets `(4, 3, 9, 32, 32)` of training step `step` and their moving-track weight 1 + 15 * moving."""
    m = motion_targets(generate_batch(range(step * 4, step * 4 + 4), CONFIG, "cpu"))[0]
    return m, 1 + 15 * (m.abs().amax(dim=(1, 2)) > 1e-4).float()[:, None, None]


def motion_l1(mv, m, w):
    """The moving-weighted L1 of the motion VAE's reconstruction of `m`."""
    return ((mv.decode_motion(mv.encode_motion(m)).float() - m).abs().mean(1, keepdim=True) * w).mean()
