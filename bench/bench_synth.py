"""TrajScene-Synth throughput (clips/s with tracks, without and with novel views) and CPU/CUDA agreement.

    python bench/bench_synth.py                                  # CPU, 17x256x256, batch 1
    python bench/bench_synth.py --device cuda --batch-size 64    # H100
    python bench/bench_synth.py --device cuda --batch-size 16 --paper-scale
"""

from __future__ import annotations

import argparse
import time

import torch

from more4d.data import SynthConfig, generate_batch


def bench(config: SynthConfig, device: str, batch_size: int, clips: int) -> float:
    generate_batch(range(10_000, 10_000 + batch_size), config, device)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    done = 0
    while done < clips:
        generate_batch(range(done, done + batch_size), config, device)
        done += batch_size
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def agreement(config: SynthConfig, device: str) -> str:
    cpu = generate_batch([0, 1, 2, 3], config, "cpu")
    dev = generate_batch([0, 1, 2, 3], config, device)
    points = (cpu.points - dev.points.cpu()).abs().max().item()
    depth = (cpu.depth - dev.depth.cpu()).abs().max().item()
    frames = (cpu.frames.int() - dev.frames.cpu().int()).abs().gt(1).float().mean().item()
    vis = (cpu.visibility != dev.visibility.cpu()).float().mean().item()
    return (f"CPU vs {device}: max |points| diff {points:.2e}, max |depth| diff {depth:.2e}, "
            f"frame values off by >1: {frames:.2e}, visibility flips: {vis:.2e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--paper-scale", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = SynthConfig.paper_scale() if args.paper_scale else SynthConfig()
    name = f"{base.num_frames}x{base.height}x{base.width}"
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}), "
          f"threads {torch.get_num_threads()}, batch {args.batch_size}, {name}")
    for views in (0, 2):
        config = SynthConfig(**{**base.__dict__, "novel_views": views})
        cpu_start = time.process_time()
        rate = bench(config, args.device, args.batch_size, args.clips)
        cpu_s = (time.process_time() - cpu_start) / (args.clips + args.batch_size)
        print(f"  tracks + {views} novel views: {rate:.2f} clips/s  (process CPU {cpu_s:.2f} s/clip)")
    if args.device != "cpu":
        print("  " + agreement(SynthConfig(**{**base.__dict__, "novel_views": 1}), args.device))


if __name__ == "__main__":
    main()
