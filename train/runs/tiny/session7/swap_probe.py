"""Prompt-swap follow rate and motion EPE of 4D-STraG against the guidance scale, on validation seeds.

    python train/runs/tiny/session7/swap_probe.py WEIGHTS [NUM_CLIPS] [GUIDANCE ...]
Runs the test `more4d eval` runs (swap the one direction word; the mean image motion of moving tracks must follow
it) on the clips among the first NUM_CLIPS validation seeds whose caption names one direction, 2 Euler steps.
"""

import sys

import torch

from more4d.data.synth import SynthConfig, generate_batch
from more4d.eval.evaluate import HELD_OUT_SEED_START, mean_image_motion, swap_direction
from more4d.eval.metrics import displacement_epe
from more4d.pipelines.strag import STraGPipeline

weights, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 32
scales = [float(g) for g in sys.argv[3:]] or [1.0, 3.0, 6.0]
pipe = STraGPipeline.from_preset("tiny", weights, device="cpu")
pipe.set_progress_bar_config(disable=True)
H, W = pipe.resolution
T = pipe.defaults["num_frames"]
first = HELD_OUT_SEED_START - 1_000
follows, epes = {g: [] for g in scales}, {g: [] for g in scales}
with torch.no_grad():
    for i in range(n):
        clip = generate_batch([first + i], SynthConfig(num_frames=T, height=H, width=W, novel_views=0),
                              "cpu").clips()[0]
        if (swap := swap_direction(clip.caption)) is None:
            continue
        caption, axis = swap
        image, gt, vis = clip.frames[0].float() / 255.0, clip.points.float(), clip.visibility
        moving = (gt[-1] - gt[0]).norm(dim=-1) > 0.05 * gt[0, :, 2].clamp_min(1e-3)
        d_gt = mean_image_motion(gt, clip.K.float(), moving)[axis]
        for g in scales:
            a = pipe(image, clip.caption, num_frames=T, num_inference_steps=2, guidance_scale=g, seed=0)
            b = pipe(image, caption, num_frames=T, num_inference_steps=2, guidance_scale=g, seed=0)
            d_a, d_b = (mean_image_motion(s.points, s.K, moving)[axis] for s in (a, b))
            follows[g].append(float(d_a * d_gt > 0 and d_b * d_gt < 0))
            epes[g].append(float(displacement_epe(a.points, gt, vis)))
            print(f"seed {first + i} g {g}: gt {float(d_gt):+.2f} px, orig {float(d_a):+.2f}, swapped {float(d_b):+.2f}",
                  flush=True)
for g in scales:
    print(f"{weights}: guidance {g}: follow {sum(follows[g]):.0f}/{len(follows[g])}, "
          f"motion EPE {sum(epes[g]) / len(epes[g]):.4f} (swap clips)")
