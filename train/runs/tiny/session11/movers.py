"""How 4D-STraG's sample gets moving tracks wrong, on held-out clips: per clip, over the tracks that truly move,
the share it leaves (nearly) still, the cosine between predicted and true final displacement, and the ratio of
their lengths; over static tracks, the mean predicted final displacement (leakage).

    python train/runs/tiny/session11/movers.py NUM_CLIPS [WEIGHTS_DIR]
"""

import sys

import numpy as np

from more4d.data.synth import SynthConfig, generate_batch
from more4d.eval.evaluate import HELD_OUT_SEED_START
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
        gt = clip.points.float()
        scene = strag(clip.frames[0].float() / 255.0, clip.caption, num_frames=T, seed=0)
        true_d = (gt - gt[:1])                      # (T, N, 3) displacement
        pred_d = (scene.points - scene.points[:1])
        moving = true_d.norm(dim=-1).amax(0) > 1e-3
        tn, pn = true_d.norm(dim=-1), pred_d.norm(dim=-1)  # (T, N)
        cos = (true_d * pred_d).sum(-1) / (tn * pn).clamp_min(1e-6)
        sel = moving[None] & (tn > 0.05)
        row = [float(moving.float().mean()), float((pn[:, moving] < 0.1 * tn[:, moving]).float().mean()),
               float(cos[sel].mean()), float((pn[sel] / tn[sel]).median()),
               float(pn[:, ~moving].mean()), float(tn[:, moving].mean()), float(pn[:, moving].mean())]
        rows.append(row)
        print(f"{i:2d} {clip.caption[:70]:70s} " + " ".join(f"{v:6.3f}" for v in row), flush=True)
    print("mean: moving_frac still_frac cos len_ratio static_leak(m) true_len(m) pred_len(m)")
    print(" ".join(f"{v:6.3f}" for v in np.array(rows).mean(0)))


if __name__ == "__main__":
    main()
