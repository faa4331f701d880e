"""A fresh tiny motion VAE trained on motion clips with dense random videos mixed into every step.

mix.py STEPS LR [patch_no_rmsnorm]: each step adds the VAE's L1 on 4 dense videos to the motion loss (REPORT
"Session 5", finding 5, the mixing test).
"""

import sys
import time

import torch
from tinit import dense

sys.path.insert(0, "train")
from _lib.data import motion_targets

from more4d.data.synth import SynthConfig, generate_batch
from more4d.eval.metrics import track_epe
from more4d.geometry import denormalize_motion, video_to_motion
from more4d.weights import load_components

steps, lr = int(sys.argv[1]), float(sys.argv[2])
if len(sys.argv) > 3:
    import tinit

    tinit.patch_no_rmsnorm()
torch.manual_seed(0)
mv = load_components("tiny", "train/outputs/mvw/C", only=("motion_vae",))["motion_vae"].float().train()
mv.requires_grad_(True)
mv.reset_adaptors(8.0)
cfg = SynthConfig(num_frames=9, height=32, width=32, novel_views=0)
val = generate_batch(range(999999000, 999999016), cfg, "cpu")
vm, vvis, vvalid, valphas = motion_targets(val)
vmov = vm.abs().amax(dim=(1, 2)) > 1e-4
opt = torch.optim.Adam(mv.parameters(), lr=lr)
t0 = time.time()
for s in range(steps + 1):
    b = generate_batch(range(s * 4, s * 4 + 4), cfg, "cpu")
    m = motion_targets(b)[0]
    mov = (m.abs().amax(dim=(1, 2)) > 1e-4).float()[:, None, None]
    r = mv.decode_motion(mv.encode_motion(m)).float()
    x = dense(4)
    loss = ((r - m).abs().mean(1, keepdim=True) * (1 + 15 * mov)).mean()
    loss = loss + (mv.vae.decode(mv.vae.encode(x).latent_dist.mode()).sample - x).abs().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if s % 100 == 0:
        with torch.no_grad():
            r = mv.decode_motion(mv.encode_motion(vm)).float()
        pred = torch.stack(
            [denormalize_motion(video_to_motion(r[i]), val.points[i, 0], valphas[i]) for i in range(16)]
        )
        epe = float(track_epe(pred, val.points, vvis.flatten(2), vvalid & vmov.flatten(1)).nanmean())
        print(s, f"moving epe {epe:.3f} (zero 0.656) {time.time() - t0:.0f}s", flush=True)
