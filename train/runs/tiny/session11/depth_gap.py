"""4D-STraG's motion EPE on held-out clips given the depth net's prediction (as `more4d eval` runs it) and given
the true depth (as training validation runs it), one sample each (seed 0), and zero motion.

    python train/runs/tiny/session11/depth_gap.py NUM_CLIPS [WEIGHTS_DIR]
"""

import sys

import numpy as np

from more4d.data.synth import SynthConfig, generate_batch
from more4d.eval.evaluate import HELD_OUT_SEED_START
from more4d.eval.metrics import displacement_epe
from more4d.pipelines.strag import STraGPipeline


def main() -> None:
    num_clips = int(sys.argv[1])
    strag = STraGPipeline.from_preset("tiny", sys.argv[2] if len(sys.argv) > 2 else None, device="cpu")
    strag.set_progress_bar_config(disable=True)
    (H, W), T = strag.resolution, strag.defaults["num_frames"]
    config = SynthConfig(num_frames=T, height=H, width=W, novel_views=0)
    rows = []
    for i in range(num_clips):
        clip = generate_batch([HELD_OUT_SEED_START + i], config).clips()[0]
        gt, vis, image = clip.points.float(), clip.visibility, clip.frames[0].float() / 255.0
        pred = strag(image, clip.caption, num_frames=T, seed=0)
        true = strag(image, clip.caption, num_frames=T, seed=0, depth=clip.depth[0])
        rows.append([float(displacement_epe(s.points, gt, vis)) for s in (pred, true)]
                    + [float(displacement_epe(gt[:1].expand_as(gt), gt, vis))])
        print(i, " ".join(f"{v:.4f}" for v in rows[-1]), flush=True)
    print("mean: predicted depth, true depth, zero motion:", np.array(rows).mean(0).round(4).tolist())


if __name__ == "__main__":
    main()
