"""4D-STraG motion (displacement) EPE against the sampler settings, on held-out clips (as `more4d eval` measures it).

    python train/runs/tiny/session6/sampler_sweep.py WEIGHTS [NUM_CLIPS] [validation|held_out]
Prints, per (denoising steps, guidance scale), the mean motion EPE of STraG, zero motion and mean motion. Choose
settings on the validation seeds (training's, just below the held-out ones), report them on the held-out seeds.
"""

import sys

import torch

from more4d.data.synth import SynthConfig, generate_batch
from more4d.eval.evaluate import HELD_OUT_SEED_START, MEAN_MOTION_FILE, apply_mean_motion, load_mean_motion
from more4d.eval.metrics import displacement_epe
from more4d.pipelines.strag import STraGPipeline

SETTINGS = [(8, 4.0), (8, 1.0), (1, 1.0), (2, 1.0), (4, 2.0)]
weights, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 12
split = sys.argv[3] if len(sys.argv) > 3 else "held_out"
first = {"held_out": HELD_OUT_SEED_START, "validation": HELD_OUT_SEED_START - 1_000}[split]
pipe = STraGPipeline.from_preset("tiny", weights, device="cpu")
pipe.set_progress_bar_config(disable=True)
mean_field = load_mean_motion(MEAN_MOTION_FILE)
H, W = pipe.resolution
T = pipe.defaults["num_frames"]
errors = {s: [] for s in SETTINGS}
base = {"zero": [], "mean": []}
with torch.no_grad():
    for i in range(n):
        clip = generate_batch([first + i], SynthConfig(num_frames=T, height=H, width=W, novel_views=0),
                              "cpu").clips()[0]
        image, gt, vis = clip.frames[0].float() / 255.0, clip.points.float(), clip.visibility
        for steps, cfg in SETTINGS:
            scene = pipe(image, clip.caption, num_frames=T, num_inference_steps=steps, guidance_scale=cfg, seed=0)
            errors[(steps, cfg)].append(float(displacement_epe(scene.points, gt, vis)))
        p0 = scene.points[0]
        base["zero"].append(float(displacement_epe(p0.expand_as(gt), gt, vis)))
        base["mean"].append(float(displacement_epe(apply_mean_motion(mean_field, p0, scene.K, (H, W), T), gt, vis)))
        print(i, {f"{k[0]}x{k[1]}": round(v[-1], 4) for k, v in errors.items()}, flush=True)


def avg(v):
    return sum(v) / len(v)


print(f"{weights}, {n} {split} clips (seeds {first}..{first + n - 1}): zero motion {avg(base['zero']):.4f}, mean motion {avg(base['mean']):.4f}")
for (steps, cfg), v in errors.items():
    print(f"  {steps} steps, guidance {cfg}: motion EPE {avg(v):.4f}")
