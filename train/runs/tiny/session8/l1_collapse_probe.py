"""Does a fresh tiny Wan VAE keep all three channels of an image? It is trained on dense random single frames (one
value per 8x8 block and channel, smoothly upsampled: 3 numbers per latent pixel, which has 16), and the correlation
of each channel with its reconstruction is printed every 100 steps (batch 8, 32x32, AdamW, one CPU thread).

    python train/runs/tiny/session8/l1_collapse_probe.py NORM LR BASE_DIM STEPS [l1|mse]
    NORM: rms (Wan's per-pixel RMS norms) or scale (the tiny motion VAE's per-channel scales)
"""

import sys
import time

import torch
from diffusers import AutoencoderKLWan

sys.path.insert(0, "train")
from train_vae import dense_videos  # noqa: E402

from more4d.models.motion_vae import drop_rms_norms  # noqa: E402

torch.set_num_threads(1)
norm, lr, base, steps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
loss_kind = sys.argv[5] if len(sys.argv) > 5 else "l1"
torch.manual_seed(0)
vae = AutoencoderKLWan(base_dim=base, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                       temperal_downsample=[False, True, True])
if norm == "scale":
    drop_rms_norms(vae)
opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0)
val = dense_videos(8, (1, 32, 32), 999, torch.device("cpu"))


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


t0 = time.time()
for step in range(steps + 1):
    if step % 100 == 0:
        with torch.no_grad():
            r = vae.decode(vae.encode(val).latent_dist.mode()).sample
        print(norm, lr, base, loss_kind, "step", step, "corr", [round(corr(val[:, c], r[:, c]), 3) for c in range(3)],
              f"{time.time() - t0:.0f}s", flush=True)
    x = dense_videos(8, (1, 32, 32), step, torch.device("cpu"))
    e = vae.decode(vae.encode(x).latent_dist.mode()).sample - x
    loss = e.abs().mean() if loss_kind == "l1" else e.square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
