"""The released MoGe4D layout end to end: random weights written in the authors' published formats, loaded by
`--model moge4d`'s loaders (`more4d.weights.released`), then one stage run; seconds and peak memory per step.

    python bench/bench_released.py                                        # tiny shapes, both stages, CPU (smoke)
    python bench/bench_released.py --scale full --device cuda --stage strag --root /tmp/moge4d --steps 2
    python bench/bench_released.py --scale full --device cuda --stage vism --root /tmp/moge4d --steps 2

At full scale the 14B files are written one stage at a time (4D-STraG + the Control base's encoders, about 50 GB;
then the InP base + LoRA, about 48 GB) so that each fits a 64 GB disk; `--keep` leaves them in `--root`. Depth is
given (no UniDepth); STraG runs 49 frames at 368x512 and ViSM renders a synthetic 49-frame scene along "orbit", both
with the preset's CFG 6.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from more4d.pipelines.strag import STraGPipeline
from more4d.pipelines.vism import ViSMPipeline
from more4d.testing import make_test_scene
from more4d.testing_released import write_released_layout

STAGE_REPOS = {"strag": ["MoGe4D", "Wan2.1-Fun-V1.1-14B-Control"],
               "vism": ["Wan2.1-Fun-V1.1-14B-InP", "Wan2.1-Fun-V1.1-14B-Control"]}
SIZES = {"tiny": dict(frames=5, height=48, width=64), "full": dict(frames=49, height=368, width=512)}


class StepClock:
    """`callback_on_step_end` that records the wall time of every denoising step."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times, self.last = device, [], time.perf_counter()

    def __call__(self, pipe, step, timestep, tensors):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now
        return {}


def gib(n: float) -> float:
    return round(n / 2**30, 2)


def run_stage(stage: str, root: Path, args: argparse.Namespace) -> dict:
    device, size = torch.device(args.device), SIZES[args.scale]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    t0 = time.perf_counter()
    write_released_layout(root, scale=args.scale, repos=STAGE_REPOS[stage], dtype=dtype,
                          device="cuda" if device.type == "cuda" else "cpu")
    written = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    t1 = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if stage == "strag":
        pipe = STraGPipeline.from_preset("moge4d", root, device=device, dtype=dtype)
    else:
        pipe = ViSMPipeline.from_preset("moge4d", root, device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    t2 = time.perf_counter()
    clock = StepClock(device)
    if stage == "strag":
        rng = np.random.default_rng(0)
        image = rng.random((size["height"], size["width"], 3)).astype(np.float32)
        depth = (2.0 + rng.random((size["height"], size["width"]))).astype(np.float32)
        out = pipe(image, "a dog runs to the left", num_frames=size["frames"], num_inference_steps=args.steps,
                   depth=depth, resolution=(size["height"], size["width"]), callback_on_step_end=clock)
        finite = bool(torch.isfinite(out.points).all())
    else:
        scene = make_test_scene(T=size["frames"], H=size["height"], W=size["width"])
        out = pipe(scene, "orbit", num_inference_steps=args.steps, seed=0, callback_on_step_end=clock)
        finite = bool(np.isfinite(out.frames).all())
    t3 = time.perf_counter()
    result = dict(
        stage=stage, scale=args.scale, device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        frames=size["frames"], size=f"{size['height']}x{size['width']}", steps=args.steps,
        guidance=pipe.defaults["guidance_scale"], written_gb=round(written / 1e9, 2), write_s=round(t1 - t0, 1),
        load_s=round(t2 - t1, 1), run_s=round(t3 - t2, 2),
        first_step_s=round(clock.times[0], 3),  # includes the encoders, the conditions and the first forward
        step_s=[round(s, 3) for s in clock.times[1:]],
        peak_gpu_gib=gib(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
        peak_rss_gib=gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024), finite=finite,
    )
    del pipe, out
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="tiny", choices=sorted(SIZES))
    parser.add_argument("--stage", default="both", choices=("strag", "vism", "both"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per stage (CFG: 2 forwards each)")
    parser.add_argument("--root", default=None, help="where to write the layout (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the written files")
    args = parser.parse_args(argv)
    root = Path(args.root or tempfile.mkdtemp(prefix="moge4d-"))
    results = []
    try:
        for stage in ("strag", "vism") if args.stage == "both" else (args.stage,):
            results.append(run_stage(stage, root, args))
            print(json.dumps(results[-1]), flush=True)
            if not args.keep:  # one stage's files at a time on the disk
                for name in STAGE_REPOS[stage]:
                    shutil.rmtree(root / name, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
