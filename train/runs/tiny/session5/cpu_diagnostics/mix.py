"""A fresh tiny motion VAE trained on motion clips with dense random videos mixed into every step.

mix.py STEPS LR [patch_no_rmsnorm]: each step adds the VAE's L1 on 4 dense videos to the motion loss (REPORT
"Session 5", finding 5, the mixing test).
"""

import sys
import time

import torch
from common import decode_errors, dense, fresh_motion_vae, motion_l1, train_motion, validation_set

steps, lr = int(sys.argv[1]), float(sys.argv[2])
torch.manual_seed(0)
mv = fresh_motion_vae("train/outputs/mvw/C", sys.argv[3] if len(sys.argv) > 3 else None)
vs = validation_set()
opt = torch.optim.Adam(mv.parameters(), lr=lr)
t0 = time.time()
for s in range(steps + 1):
    m, w = train_motion(s)
    x = dense(4)
    loss = motion_l1(mv, m, w) + (mv.vae.decode(mv.vae.encode(x).latent_dist.mode()).sample - x).abs().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if s % 100 == 0:
        print(
            s, f"moving epe {decode_errors(mv, vs)[0]:.3f} (zero 0.656) {time.time() - t0:.0f}s", flush=True
        )
