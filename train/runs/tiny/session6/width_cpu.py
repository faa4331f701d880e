"""CPU check for the next session: does a wider from-scratch motion VAE (scale norms) learn motion faster per step?

    python train/runs/tiny/session6/width_cpu.py BASE_DIM STEPS
Trains like tiny_motion_vae.yaml (gain 8, moving_weight 16, 4 dense clips, lr 1e-3, Adam) at 9x32x32, batch 4,
and prints moving/static track EPE on 16 validation clips every 100 steps.
"""

import sys
import time

import torch

sys.path.insert(0, "train")
from _lib.config import VALIDATION_SEED_START  # noqa: E402
from _lib.data import motion_targets  # noqa: E402
from train_vae import RoundTrip, VAEConfig, dense_videos, motion_step, moving_tracks  # noqa: E402

from more4d.data.synth import SynthConfig, generate_batch  # noqa: E402
from more4d.eval.metrics import track_epe  # noqa: E402
from more4d.geometry import denormalize_motion, video_to_motion  # noqa: E402
from more4d.models.motion_vae import MotionVAE  # noqa: E402
from more4d.models.strag import TINY_MOTION_VAE_CONFIG, TINY_VAE_CONFIG  # noqa: E402

base, steps = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
mvae = MotionVAE(**{**TINY_VAE_CONFIG, "base_dim": base}, **TINY_MOTION_VAE_CONFIG, motion_gain=8.0).train()
print(f"base_dim {base}: {sum(p.numel() for p in mvae.parameters()) / 1e6:.2f}M parameters")
cfg = VAEConfig(moving_weight=16.0, dense_clips=4)
synth = SynthConfig(num_frames=9, height=32, width=32, novel_views=0)
val = generate_batch(range(VALIDATION_SEED_START, VALIDATION_SEED_START + 16), synth)
m, vis, valid, alphas = motion_targets(val)
moving = moving_tracks(m).flatten(1)
opt = torch.optim.Adam(mvae.parameters(), lr=1e-3)
forward, t0 = RoundTrip(mvae), time.time()
for step in range(steps + 1):
    if step % 100 == 0:
        with torch.no_grad():
            r = mvae.decode_motion(mvae.encode_motion(m)).float()
        pred = torch.stack([denormalize_motion(video_to_motion(r[i]), val.points[i, 0], alphas[i]) for i in range(16)])
        epe = [float(track_epe(pred, val.points, vis.flatten(2), valid & k).nanmean()) for k in (moving, ~moving)]
        print(f"step {step}: moving {epe[0]:.3f} m, static {epe[1]:.4f} m ({time.time() - t0:.0f} s)", flush=True)
    batch = generate_batch(range(step * 4, step * 4 + 4), synth)
    loss, _ = motion_step(forward, batch, cfg, dense_videos(4, (9, 32, 32), step, torch.device("cpu")))
    opt.zero_grad()
    loss.backward()
    opt.step()
