"""A fresh motion VAE on dense random videos, then on motion: dense.py PRE_STEPS MOTION_STEPS LR [SRC [ABLATION]]
(REPORT "Session 5", finding 5)."""

import sys
import time

import torch
from common import decode_errors, dense, fresh_motion_vae, motion_l1, train_motion, validation_set

pre_steps, steps, lr = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
torch.manual_seed(0)
mv = fresh_motion_vae(
    sys.argv[4] if len(sys.argv) > 4 else "train/outputs/mvw/C", sys.argv[5] if len(sys.argv) > 5 else None
)
vae = mv.vae
vs = validation_set()
dval = dense(8, g=torch.Generator().manual_seed(1))
opt = torch.optim.Adam(mv.parameters(), lr=lr)


def relative_errors():
    """(frames 1.., frame 0) relative reconstruction error of the dense validation videos."""
    with torch.no_grad():
        d = vae.decode(vae.encode(dval).latent_dist.mode()).sample - dval
    return tuple(
        float(d[:, :, f].abs().mean() / dval[:, :, f].abs().mean()) for f in (slice(1, None), slice(0, 1))
    )


t0 = time.time()
for s in range(pre_steps + steps + 1):
    if s < pre_steps:
        x = dense(4)
        loss = (vae.decode(vae.encode(x).latent_dist.mode()).sample - x).abs().mean()
    else:
        loss = motion_l1(mv, *train_motion(s))
    opt.zero_grad()
    loss.backward()
    opt.step()
    if s % 100 == 0:
        rel, f0 = relative_errors()
        print(
            s,
            "pre" if s < pre_steps else "motion",
            f"moving epe {decode_errors(mv, vs)[0]:.3f} (zero 0.656) "
            f"dense rel {rel:.3f} f0 {f0:.3f} {time.time() - t0:.0f}s",
            flush=True,
        )
