"""The caption-oracle floors of the motion EPE on held-out clips.

`generate_siblings` redraws, K times per clip, the motion parameters that neither the frame-0 image nor the caption
fixes (magnitudes, orbit phase and sweep, spin sign and angle, bounce and pulse counts). Scored against the clip:
zero motion; the mean of the K siblings' tracks (about the best deterministic prediction); one sibling (what a
perfect sampler of the true distribution would score, `more4d eval`'s `motion_epe_floor`).

    python train/runs/tiny/session10/floor.py NUM_CLIPS K
"""

import json
import sys

from more4d.data.synth import SynthConfig, generate_batch, generate_siblings
from more4d.eval.evaluate import HELD_OUT_SEED_START
from more4d.eval.metrics import displacement_epe


def main() -> None:
    num_clips, k = int(sys.argv[1]), int(sys.argv[2])
    config = SynthConfig(num_frames=17, height=256, width=256, novel_views=0)
    totals = {"zero": 0.0, "oracle_mean": 0.0, "perfect_sampler": 0.0}
    for i in range(num_clips):
        seed = HELD_OUT_SEED_START + i
        clip = generate_batch([seed], config)
        gt, vis = clip.points[0].float(), clip.visibility[0]
        siblings = generate_siblings(seed, k, config, generator_seed=7 + i)
        row = {"seed": i, "caption": clip.captions[0],
               "zero": float(displacement_epe(gt[:1].expand_as(gt), gt, vis)),
               "oracle_mean": float(displacement_epe(siblings.points.float().mean(0), gt, vis)),
               "perfect_sampler": float(sum(displacement_epe(p.float(), gt, vis) for p in siblings.points) / k)}
        for key in totals:
            totals[key] += row[key] / num_clips
        print(json.dumps(row), flush=True)
    print(json.dumps({key: round(v, 4) for key, v in totals.items()}), "ratio",
          {key: round(v / totals["zero"], 3) for key, v in totals.items()})


if __name__ == "__main__":
    main()
