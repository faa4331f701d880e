"""Loss shapes on a motion VAE: lossx.py {l1,l2,epe} STEPS SRC LR [ABLATION] (REPORT "Session 5", findings 3, 4)."""

import sys
import time

import torch
from common import decode_errors, fresh_motion_vae, train_motion, validation_set

PER_TRACK = {  # error per track and frame, from the residual d (B, 3, T, H, W)
    "l1": lambda d: d.abs().mean(1, keepdim=True),
    "l2": lambda d: d.pow(2).mean(1, keepdim=True),
    "epe": lambda d: (d.pow(2).sum(1, keepdim=True) + 1e-6).sqrt(),
}
kind, steps, src, lr = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
torch.manual_seed(0)
mv = fresh_motion_vae(src, sys.argv[5] if len(sys.argv) > 5 else None)
vs = validation_set()
opt = torch.optim.Adam(mv.parameters(), lr=lr)
t0 = time.time()
for s in range(steps + 1):
    m, w = train_motion(s)
    d = mv.decode_motion(mv.encode_motion(m)).float() - m
    per = PER_TRACK[kind](d)
    loss = (per * w).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if s % 100 == 0:
        e = decode_errors(mv, vs)
        print(kind, s, f"moving {e[0]:.3f} static {e[1]:.4f} {time.time() - t0:.0f}s", flush=True)
