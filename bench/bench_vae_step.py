"""Training step of the tiny motion VAE (train_vae.py stage b), eager against CUDA-graphed, side by side.

The tiny Wan VAE runs thousands of small kernels a step, so on a GPU its step is bound by kernel launches. This
times the same step (RoundTrip forward on motion + dense videos, L1 loss, backward, AdamW) both ways on one model.

    python bench/bench_vae_step.py --batch-size 16 --size 17x64x64      # needs CUDA
"""

from __future__ import annotations

import argparse
import runpy
import time
from pathlib import Path

import torch

from more4d.models.builders import build_tiny_motion_vae

# the step of the training script itself (a script, not a module: run from its file)
TRAIN_VAE = runpy.run_path(str(Path(__file__).resolve().parents[1] / "train" / "train_vae.py"), run_name="train_vae")
RoundTrip, dense_videos = TRAIN_VAE["RoundTrip"], TRAIN_VAE["dense_videos"]


def time_steps(forward, params: list[torch.nn.Parameter], inputs: list[torch.Tensor], steps: int) -> float:
    """Seconds per step of forward + L1 + backward + AdamW (after 3 warm-up steps)."""
    opt = torch.optim.AdamW(params, lr=1e-4)
    for i in range(steps + 3):
        if i == 3:
            torch.cuda.synchronize()
            start = time.perf_counter()
        out = forward(*inputs)
        loss = sum((o - x).abs().mean() for o, x in zip(out, inputs))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dense-clips", type=int, default=4)
    p.add_argument("--size", default="17x64x64", help="TxHxW")
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: this benchmark needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    shape = tuple(int(v) for v in args.size.split("x"))
    model = build_tiny_motion_vae().cuda().train()
    params = list(model.parameters())
    inputs = [0.3 * torch.randn(args.batch_size, 3, *shape, device="cuda"),
              dense_videos(args.dense_clips, shape, 0, torch.device("cuda"))]
    eager = time_steps(RoundTrip(model), params, inputs, args.steps)
    start = time.perf_counter()
    graphed = torch.cuda.make_graphed_callables(RoundTrip(model), tuple(inputs))
    capture = time.perf_counter() - start
    with torch.no_grad():
        diff = max((a - b).abs().max().item() for a, b in zip(RoundTrip(model)(*inputs), graphed(*inputs)))
    fast = time_steps(graphed, params, inputs, args.steps)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch_size} + "
          f"{args.dense_clips} dense of {args.size}, fp32/TF32, {args.steps} steps each")
    print(f"eager   {eager * 1e3:8.1f} ms/step  {1 / eager:6.2f} it/s")
    print(f"graphed {fast * 1e3:8.1f} ms/step  {1 / fast:6.2f} it/s  (capture {capture:.1f} s)")
    print(f"speed-up x{eager / fast:.1f}; graphed vs eager outputs: max |diff| {diff:.2e}; "
          f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
