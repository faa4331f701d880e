"""`more4d eval`'s motion VAE numbers (reconstruction EPE in metres, per-axis relative error on moving tracks) for
several motion VAE folders, on the same held-out clips.

    python train/runs/tiny/session10/vae_eval.py NUM_CLIPS FOLDER [FOLDER ...]
"""

import sys

from more4d.data.synth import SynthConfig, generate_batch
from more4d.eval.evaluate import HELD_OUT_SEED_START, motion_vae_reconstruction, motion_vae_summary
from more4d.models.motion_vae import MotionVAE

num_clips = int(sys.argv[1])
config = SynthConfig(num_frames=17, height=256, width=256, novel_views=0)
clips = [generate_batch([HELD_OUT_SEED_START + i], config).clips()[0] for i in range(num_clips)]
for folder in sys.argv[2:]:
    mvae = MotionVAE.from_pretrained(folder).eval()
    print(folder, motion_vae_summary([motion_vae_reconstruction(mvae, clip) for clip in clips]), flush=True)
