"""Write the fresh motion VAEs `train/outputs/mvw/{C,W1,W2,W3}/motion_vae` (random, seed 0) of the call-3 table."""

import torch

from more4d.models.motion_vae import MotionVAE
from more4d.models.strag import TINY_MOTION_VAE_CONFIG, TINY_VAE_CONFIG

for name, base, mult in [
    ("C", 8, [1, 2, 2, 2]),
    ("W1", 16, [1, 2, 2, 2]),
    ("W2", 16, [1, 2, 4, 4]),
    ("W3", 8, [1, 2, 4, 4]),
]:
    torch.manual_seed(0)
    mv = MotionVAE(**{**TINY_VAE_CONFIG, "base_dim": base, "dim_mult": mult}, **{**TINY_MOTION_VAE_CONFIG, "vae_norm": "rms"})
    mv.half().save_pretrained(f"train/outputs/mvw/{name}/motion_vae")
    print(name, f"{sum(p.numel() for p in mv.parameters()) / 1e6:.2f}M parameters")
