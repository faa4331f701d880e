"""Renderer throughput: frames per second of `render_points` on a dense scene.

    python bench/bench_render.py --threads 1                       # CPU: 200k points -> 256x256
    python bench/bench_render.py --device cuda --points 1000000 --size 512 --batch 8

The scene is a dense depth-mapped grid (like a Scene4D frame: one point per source pixel, bumpy depth) with
its colours, rendered from a camera slightly off the source camera (so holes and occlusions occur). Every
available backend and mode is timed side by side (gsplat only when importable on CUDA).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from more4d.geometry import backproject_depth, intrinsics_from_fov
from more4d.render import gsplat_available, render_points
from more4d.render.scene import surface_radius


def make_scene(num_points: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points `(N, 3)`, colours `(N, 3)` and per-point radius `(N,)` of a bumpy depth map ~num_points pixels."""
    side = int(math.sqrt(num_points))
    K = intrinsics_from_fov(55.0, side, side)
    g = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.linspace(0, 6, side), torch.linspace(0, 6, side), indexing="ij")
    depth = 3.0 + 0.5 * torch.sin(xs) * torch.cos(ys) + 0.05 * torch.rand(side, side, generator=g)
    points = backproject_depth(depth, K)
    colors = torch.rand(side * side, 3, generator=g)
    radius, _ = surface_radius(points[None], points, (side, side), torch.eye(4)[None], K[None])  # own-camera size
    return points.to(device), colors.to(device), radius[0].to(device)


def orbit_cameras(num: int, device: torch.device) -> torch.Tensor:
    """`(num, 4, 4)` opencv_c2w poses on a small arc around the scene centre at depth 3."""
    poses = []
    for i in range(num):
        a = math.radians(-5.0 + 10.0 * i / max(num - 1, 1))
        c2w = torch.eye(4)
        c2w[:3, :3] = torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
        c2w[:3, 3] = torch.tensor([-3.0 * math.sin(a), 0.0, 3.0 - 3.0 * math.cos(a)])
        poses.append(c2w)
    return torch.stack(poses).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(points, colors, radius, c2w, K, size, mode, backend, iters, warmup) -> tuple[float, float]:
    """Frames per second and the mean hole fraction."""
    kw = dict(radius=radius, mode=mode, backend=backend)
    for _ in range(warmup):
        out = render_points(points, colors, c2w, K, size, size, **kw)
    sync(points.device)
    start = time.perf_counter()
    for _ in range(iters):
        out = render_points(points, colors, c2w, K, size, size, **kw)
    sync(points.device)
    elapsed = time.perf_counter() - start
    return iters * c2w.shape[0] / elapsed, float(out.hole_mask.float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=256, help="output height = width")
    parser.add_argument("--batch", type=int, default=1, help="frames per render_points call")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    points, colors, radius = make_scene(args.points, device)
    c2w = orbit_cameras(args.batch, device)
    K = intrinsics_from_fov(55.0, args.size, args.size).to(device)
    runs = [("disk", "torch"), ("gaussian", "torch")]
    if gsplat_available(device):
        runs.append(("gaussian", "gsplat"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{points.shape[0]:,} points -> {args.size}x{args.size}, batch {args.batch}, {name}, torch {torch.__version__}")
    print(f"{'mode':<10}{'backend':<9}{'frames/s':>10}{'ms/frame':>10}{'holes':>8}")
    for mode, backend in runs:
        fps, holes = bench(points, colors, radius, c2w, K, args.size, mode, backend, args.iters, args.warmup)
        print(f"{mode:<10}{backend:<9}{fps:>10.1f}{1000.0 / fps:>10.2f}{holes:>8.3f}")
    if not gsplat_available(device):
        print("gsplat: not run (needs CUDA and `import gsplat`)")


if __name__ == "__main__":
    main()
