import math

import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanResample


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
    import torch.nn as nn

    n = 0
    for mod in vae.modules():
        if isinstance(mod, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
            n += 1
    return n


def patch_no_rmsnorm():
    """Ablation: WanRMS_norm becomes gamma * x + bias (no per-pixel channel normalisation)."""
    from diffusers.models.autoencoders import autoencoder_kl_wan as w

    def forward(self, x):
        return x * self.gamma + self.bias

    w.WanRMS_norm.forward = forward
    return 1


def dense(B, T=9, H=32, W=32, g=None):
    """Dense random videos in [-0.8, 0.8]: independent 4x4 fields per frame and channel, upsampled trilinearly."""
    import torch.nn.functional as F

    low = torch.rand(B, 3, T, 4, 4, generator=g) * 1.6 - 0.8
    return F.interpolate(low, size=(T, H, W), mode="trilinear", align_corners=True)
