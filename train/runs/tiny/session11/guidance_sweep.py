"""4D-STraG's held-out motion EPE and prompt-swap test at several guidance scales (as `more4d eval` measures them,
without its depth, VAE and ViSM parts).

    python train/runs/tiny/session11/guidance_sweep.py NUM_CLIPS SCALE [SCALE ...]
"""

import sys
from functools import partial

import numpy as np

from more4d.data.synth import SynthConfig, generate_batch
from more4d.eval.evaluate import HELD_OUT_SEED_START, prompt_swap
from more4d.eval.metrics import displacement_epe
from more4d.pipelines.strag import STraGPipeline


def main() -> None:
    num_clips, scales = int(sys.argv[1]), [float(g) for g in sys.argv[2:]]
    strag = STraGPipeline.from_preset("tiny", device="cpu")
    strag.set_progress_bar_config(disable=True)
    (H, W), T = strag.resolution, strag.defaults["num_frames"]
    clips = generate_batch(range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + num_clips),
                           SynthConfig(num_frames=T, height=H, width=W, novel_views=0)).clips()
    for g in scales:
        epe, zero, follows, toward = [], [], [], []
        for clip in clips:
            gt, vis, image = clip.points.float(), clip.visibility, clip.frames[0].float() / 255.0
            generate = partial(strag, image, num_frames=T, guidance_scale=g, seed=0)  # caption -> Scene4D
            scene = generate(clip.caption)
            epe.append(float(displacement_epe(scene.points, gt, vis)))
            zero.append(float(displacement_epe(gt[:1].expand_as(gt), gt, vis)))
            swap = prompt_swap(generate, clip.caption, scene, gt, clip.K.float())
            if swap is not None:
                follows.append(swap["follows"])
                toward.append((swap["swapped"] - swap["orig"]) * swap["gt"] < 0)
        print(f"guidance {g}: motion EPE {np.mean(epe):.4f} (zero {np.mean(zero):.4f}, "
              f"{100 * (1 - np.mean(epe) / np.mean(zero)):.1f}% below); swap follows {sum(follows)}/{len(follows)}, "
              f"moves away from the true direction {sum(toward)}/{len(toward)}", flush=True)


if __name__ == "__main__":
    main()
