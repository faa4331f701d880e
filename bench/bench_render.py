"""Renderer throughput and backend agreement of `render_points`.

    python bench/bench_render.py --threads 1                       # CPU: 200k points -> 256x256
    python bench/bench_render.py --device cuda --points 1000000 --size 512 --batch 8
    python bench/bench_render.py --device cuda --backends gsplat --out DIR   # gsplat required, vs the reference

Throughput: a dense depth-mapped grid (like a Scene4D frame: one point per source pixel, bumpy depth) with its
colours, rendered from a camera slightly off the source camera (so holes and occlusions occur), for each mode and
backend.

Agreement: the Scene4D test scene (`more4d.testing.make_test_scene`) at each `--scenes` size, rendered by
`render_scene` in gaussian mode along a 20-degree orbit from the input camera (as the "orbit" preset) with each
backend and compared with a first torch render: the torch row is a second torch render (the run-to-run noise floor),
the gsplat row gsplat vs torch. Depth differences count pixels that neither render marks as a hole. Times are the
median of `--repeats` full renders (render_scene's default batch of 8 frames) after one warm-up.

`--backends`: "torch" runs the reference alone; "gsplat" also runs gsplat and exits with status 2, saying why in
one line, when it cannot (no CUDA, not installed, its CUDA extension does not build); "auto" adds gsplat when it can.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import statistics
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from more4d.geometry import backproject_depth, fov_from_intrinsics, intrinsics_from_fov
from more4d.render import RenderOutput, render_points, render_scene
from more4d.render.scene import surface_radius
from more4d.testing import make_test_scene

GSPLAT_UNAVAILABLE_EXIT = 2
ORBIT_DEGREES = (0.0, 20.0)  # agreement path: from the input camera 20 degrees round the scene centroid


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


def orbit_cameras(num: int, device: torch.device, depth: float = 3.0, degrees: tuple[float, float] = (-5.0, 5.0)
                  ) -> torch.Tensor:
    """`(num, 4, 4)` opencv_c2w poses on an arc from `degrees[0]` to `degrees[1]` around (0, 0, depth), facing it."""
    poses = []
    for i in range(num):
        a = math.radians(degrees[0] + (degrees[1] - degrees[0]) * i / max(num - 1, 1))
        c2w = torch.eye(4)
        c2w[:3, :3] = torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
        c2w[:3, 3] = torch.tensor([-depth * math.sin(a), 0.0, depth - depth * math.cos(a)])
        poses.append(c2w)
    return torch.stack(poses).to(device)


@dataclass
class Trajectory:
    """What `render_scene` reads of a `more4d.camera.CameraTrajectory` (more4d.camera imports viser, which the GPU
    image lacks)."""

    c2w: torch.Tensor  # (F, 4, 4) opencv_c2w
    fov_deg: torch.Tensor  # (F,) vertical

    def __len__(self) -> int:
        return int(self.c2w.shape[0])


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


def load_gsplat(device: torch.device) -> dict:
    """Import gsplat and build or load its CUDA extension, timing both.

    Returns `{"version", "import_s", "extension_s"}`, or `{"error": one line, "details": traceback}` when gsplat
    cannot run on `device`.
    """
    if device.type != "cuda" or not torch.cuda.is_available():
        return {"error": f"needs a CUDA device (--device {device}, CUDA available: {torch.cuda.is_available()})"}
    start = time.perf_counter()
    try:
        gsplat = importlib.import_module("gsplat")
    except Exception as exc:
        return {"error": f"import gsplat failed: {type(exc).__name__}: {exc}", "details": traceback.format_exc()}
    imported = time.perf_counter()
    try:  # the PyPI wheel builds its extension with nvcc here, on first use (cached afterwards)
        extension = importlib.import_module("gsplat.cuda._backend")._C
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return {"error": f"gsplat {gsplat.__version__}: its CUDA extension did not build or load: "
                         f"{type(exc).__name__}: {first}", "details": traceback.format_exc()}
    if extension is None:
        return {"error": f"gsplat {gsplat.__version__}: no CUDA toolkit (nvcc) found to build its extension"}
    return {"version": gsplat.__version__, "import_s": imported - start, "extension_s": time.perf_counter() - imported}


def parse_size(text: str) -> tuple[int, int]:
    """'368x512' -> (368, 512): height x width."""
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def agreement(ref: RenderOutput, out: RenderOutput) -> dict[str, float | None]:
    """Differences of `out` from `ref`; psnr_db is None when the rgb frames are identical."""
    rgb, alpha = (out.rgb - ref.rgb).abs(), (out.alpha - ref.alpha).abs()
    both = ~ref.hole_mask & ~out.hole_mask
    depth = (out.depth - ref.depth).abs()[both]
    mse = float(((out.rgb - ref.rgb) ** 2).mean())
    return {
        "rgb_max": float(rgb.max()), "rgb_mean": float(rgb.mean()),
        "alpha_max": float(alpha.max()), "alpha_mean": float(alpha.mean()),
        "depth_max": float(depth.max()) if depth.numel() else 0.0,
        "depth_mean": float(depth.mean()) if depth.numel() else 0.0,
        "psnr_db": 10.0 * math.log10(1.0 / mse) if mse > 0 else None,
        "hole_diff": float((ref.hole_mask != out.hole_mask).float().mean()),
        "holes": float(out.hole_mask.float().mean()),
    }


def compare_backends(size: tuple[int, int], frames: int, backends: list[str], device: torch.device,
                     repeats: int) -> list[dict]:
    """One row per backend: its agreement with a first torch render of the scene and its median ms per frame."""
    height, width = size
    scene = make_test_scene(T=frames, H=height, W=width).to(device)
    c2w = orbit_cameras(frames, torch.device("cpu"), scene.centroid_depth(), ORBIT_DEGREES)
    trajectory = Trajectory(c2w, torch.full((frames,), fov_from_intrinsics(scene.K.cpu(), height)))

    def render(backend: str) -> RenderOutput:
        return render_scene(scene, trajectory, mode="gaussian", backend=backend, device=device)

    ref = render("torch")  # also the warm-up of the torch backend
    rows = []
    for backend in backends:
        if backend != "torch":
            render(backend)  # warm-up
        times = []
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            out = render(backend)
            sync(device)
            times.append(time.perf_counter() - start)
        ms = 1000.0 * statistics.median(times) / frames
        rows.append({"scene": f"{height}x{width}", "frames": frames, "backend": backend, "ms_per_frame": ms,
                     **agreement(ref, out)})
    return rows


def print_agreement(rows: list[dict]) -> None:
    print("gaussian mode, 20-degree orbit; vs a first torch render (torch row: a second torch render, the noise floor); "
          "depth in metres where neither render has a hole")
    print(f"{'scene':<9}{'backend':<8}{'ms/frame':>9}{'rgb max':>9}{'rgb mean':>10}{'PSNR dB':>9}{'alpha max':>10}"
          f"{'alpha mean':>11}{'depth max':>10}{'depth mean':>11}{'holes':>7}{'hole diff':>10}")
    for r in rows:
        psnr = "inf" if r["psnr_db"] is None else f"{r['psnr_db']:.1f}"
        print(f"{r['scene']:<9}{r['backend']:<8}{r['ms_per_frame']:>9.2f}{r['rgb_max']:>9.1e}{r['rgb_mean']:>10.1e}"
              f"{psnr:>9}{r['alpha_max']:>10.1e}{r['alpha_mean']:>11.1e}{r['depth_max']:>10.1e}{r['depth_mean']:>11.1e}"
              f"{r['holes']:>7.3f}{r['hole_diff']:>10.1e}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=256, help="throughput output height = width")
    parser.add_argument("--batch", type=int, default=1, help="frames per render_points call")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--backends", choices=("auto", "torch", "gsplat"), default="auto",
                        help="torch: the reference alone; gsplat: also gsplat, exit 2 if it cannot run; auto: gsplat "
                             "when it can run")
    parser.add_argument("--scenes", default="", help="agreement scenes as HxW,HxW (e.g. 256x256,368x512); "
                        "empty: no agreement run")
    parser.add_argument("--frames", type=int, default=16, help="frames per agreement scene")
    parser.add_argument("--repeats", type=int, default=5, help="timed renders per agreement row (median)")
    parser.add_argument("--out", default=None, help="folder for bench_render.json (and gsplat_error.txt)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out) if args.out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)

    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    results: dict = {"device": name, "torch": torch.__version__, "args": vars(args)}
    print(f"{name}, torch {torch.__version__}")
    backends = ["torch"]
    if args.backends != "torch":
        gsplat = load_gsplat(device)
        results["gsplat"] = {k: v for k, v in gsplat.items() if k != "details"}
        if "error" in gsplat:
            if "details" in gsplat:
                print(gsplat["details"][-6000:])
                if out_dir:
                    (out_dir / "gsplat_error.txt").write_text(gsplat["details"])
            if out_dir:
                (out_dir / "bench_render.json").write_text(json.dumps(results, indent=2))
            print(f"gsplat: not run: {gsplat['error']}")
            if args.backends == "gsplat":
                raise SystemExit(GSPLAT_UNAVAILABLE_EXIT)
        else:
            backends.append("gsplat")
            print(f"gsplat {gsplat['version']}: import {gsplat['import_s']:.1f} s, CUDA extension build or load "
                  f"{gsplat['extension_s']:.1f} s")

    points, colors, radius = make_scene(args.points, device)
    c2w = orbit_cameras(args.batch, device)
    K = intrinsics_from_fov(55.0, args.size, args.size).to(device)
    runs = [("disk", "torch")] + [("gaussian", b) for b in backends]
    print(f"throughput: {points.shape[0]:,} points -> {args.size}x{args.size}, batch {args.batch}")
    print(f"{'mode':<10}{'backend':<9}{'frames/s':>10}{'ms/frame':>10}{'holes':>8}")
    results["throughput"] = []
    for mode, backend in runs:
        fps, holes = bench(points, colors, radius, c2w, K, args.size, mode, backend, args.iters, args.warmup)
        results["throughput"].append({"mode": mode, "backend": backend, "frames_per_s": fps, "holes": holes})
        print(f"{mode:<10}{backend:<9}{fps:>10.1f}{1000.0 / fps:>10.2f}{holes:>8.3f}")

    results["agreement"] = []
    for size in (parse_size(s) for s in args.scenes.split(",") if s.strip()):
        results["agreement"] += compare_backends(size, args.frames, backends, device, args.repeats)
    if results["agreement"]:
        print_agreement(results["agreement"])
    if out_dir:
        (out_dir / "bench_render.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
