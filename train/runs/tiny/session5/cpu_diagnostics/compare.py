"""Moving/static track EPE (m) of motion VAEs on the 8 validation clips at 17x128x128: compare.py DIR [DIR ...]."""

import sys

import torch

sys.path.insert(0, "train")
from _lib.data import VALIDATION_SEED_START, motion_targets

from more4d.data.synth import SynthConfig, generate_batch
from more4d.eval.metrics import track_epe
from more4d.geometry import denormalize_motion, video_to_motion
from more4d.weights import load_components

val = generate_batch(
    range(VALIDATION_SEED_START, VALIDATION_SEED_START + 8),
    SynthConfig(num_frames=17, height=128, width=128, novel_views=0),
    "cpu",
)
m, vis, valid, alphas = motion_targets(val)
moving = (m.abs().amax(dim=(1, 2)) > 1e-4).flatten(1)
for src in sys.argv[1:]:
    mv = load_components("tiny", src, only=("motion_vae",))["motion_vae"].float().eval()
    with torch.no_grad():
        r = torch.cat([mv.decode_motion(mv.encode_motion(m[i : i + 2])).float() for i in range(0, 8, 2)])
    pred = torch.stack(
        [denormalize_motion(video_to_motion(r[i]), val.points[i, 0], alphas[i]) for i in range(8)]
    )
    epe = [float(track_epe(pred, val.points, vis.flatten(2), valid & k).nanmean()) for k in (moving, ~moving)]
    print(f"{src}: moving {epe[0]:.3f} m, static {epe[1]:.4f} m")
