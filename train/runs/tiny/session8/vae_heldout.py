"""The motion VAE part of `more4d eval` alone, for motion VAEs that have no 4D-STraG trained on their latents yet:
reconstruction EPE (metric units) and per-axis relative error on moving tracks, on the eval's held-out seeds.

    python train/runs/tiny/session8/vae_heldout.py NUM_CLIPS MOTION_VAE_DIR [MOTION_VAE_DIR ...]
"""

import sys

from more4d.data.synth import SynthConfig, generate_batch
from more4d.eval.evaluate import HELD_OUT_SEED_START, motion_vae_reconstruction, motion_vae_summary
from more4d.models.motion_vae import MotionVAE
from more4d.pipelines.strag import STraGPipeline

num_clips, folders = int(sys.argv[1]), sys.argv[2:]
preset = STraGPipeline.from_preset("tiny", device="cpu")  # the eval's resolution and frame count
(H, W), T = preset.resolution, preset.defaults["num_frames"]
config = SynthConfig(num_frames=T, height=H, width=W, novel_views=0)
clips = [generate_batch([HELD_OUT_SEED_START + i], config, "cpu").clips()[0] for i in range(num_clips)]
for folder in folders:
    mvae = MotionVAE.from_pretrained(folder).eval()
    s = motion_vae_summary([motion_vae_reconstruction(mvae, clip) for clip in clips])
    x, y, z = s["axis_relative_error"]
    print(f"{folder}: {num_clips} clips {T}x{H}x{W}: recon EPE {s['recon_epe_metric']:.4f} m, "
          f"relative error x {x:.3f} y {y:.3f} depth {z:.3f}", flush=True)
