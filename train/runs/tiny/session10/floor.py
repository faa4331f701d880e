"""The caption-oracle floor of the motion EPE on held-out clips.

Redraws, K times per clip, the scene parameters that neither the frame-0 image nor the caption fixes (motion
magnitudes, orbit phase and sweep, spin sign and angle, bounce and pulse counts), keeping every other draw, so frame 0
and the caption stay the same. Scores against the clip: zero motion; the mean of the K siblings' tracks (about the
best deterministic prediction); one sibling (what a perfect sampler of the true distribution would score).

    python train/runs/tiny/session10/floor.py NUM_CLIPS K
"""

import json
import linecache
import sys

import torch

import more4d.data.synth as synth
from more4d.eval.evaluate import HELD_OUT_SEED_START
from more4d.eval.metrics import displacement_epe

# source fragments of the draws in `synth._sample_clip` that the image and the caption leave open
HIDDEN = ("dist = d.uniform(0.6, 1.2)", "bounce = d.uniform(0.4, 0.8)", "* d.uniform(0.5, 1.0)",
          "orbit = d.uniform(0.35, 0.6)", "spin = d.sign()", "lin[2] = -min(d.uniform", "lin[2] = d.uniform(1.5, 3.0)",
          "pulse = d.uniform(0.25, 0.4)", "n_bounce, n_pulse, theta0", "sweep = (1 if")


class SiblingDraw(synth._Draw):
    """`_Draw` that replays a clip's draws but redraws the hidden ones from `fresh` (when it is set)."""

    fresh: torch.Generator | None = None

    def _hidden(self) -> bool:
        frame = sys._getframe(2)
        while frame.f_code.co_name != "_sample_clip":
            frame = frame.f_back
        line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
        if "dist = d.uniform(0.6, 1.2)" in line and frame.f_locals.get("direction") == "down":
            return False  # a downward move starts that far above the ground: frame 0 shows the distance
        return any(h in line for h in HIDDEN)

    def uniform(self, lo: float, hi: float) -> float:
        value = super().uniform(lo, hi)
        if SiblingDraw.fresh is not None and self._hidden():
            value = lo + (hi - lo) * float(torch.rand((), generator=SiblingDraw.fresh, dtype=torch.float64))
        return value

    def integer(self, n: int) -> int:
        value = super().integer(n)
        if SiblingDraw.fresh is not None and self._hidden():
            value = int(torch.randint(n, (), generator=SiblingDraw.fresh))
        return value


def main() -> None:
    num_clips, k = int(sys.argv[1]), int(sys.argv[2])
    synth._Draw = SiblingDraw
    config = synth.SynthConfig(num_frames=17, height=256, width=256, novel_views=0)
    totals = {"zero": 0.0, "oracle_mean": 0.0, "perfect_sampler": 0.0}
    for i in range(num_clips):
        seed = HELD_OUT_SEED_START + i
        SiblingDraw.fresh = None
        clip = synth.generate_batch([seed], config)
        gt, vis = clip.points[0].float(), clip.visibility[0]
        SiblingDraw.fresh = torch.Generator().manual_seed(7 + i)
        siblings = synth.generate_batch([seed] * k, config)
        SiblingDraw.fresh = None
        assert torch.allclose(siblings.depth[:, 0], clip.depth[:, 0], atol=1e-4), "frame 0 changed"
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
