"""4D-ViSM cost: the tiny ViSM on the CPU, and at paper scale (H100) the ViSM forward vs the stock Wan forward
and the two-stage generation per memory mode.

    python bench/bench_vism.py                                              # tiny, 17x256x256, preset defaults, CPU
    python bench/bench_vism.py --scale 14b --device cuda --what forward     # 49x368x512, 14B InP, random bf16
    python bench/bench_vism.py --scale 14b --device cuda --what stages --steps 2 --mode all

Tiny: assets/weights/tiny when present, else seeded random tiny weights (same cost); the scene is a synthetic
Scene4D rendered along the "orbit" preset. 14B: models are built on the meta device and filled with random bf16
weights on the GPU (`more4d.models.vism.build_random`; nothing is downloaded). "forward" times one forward of the
same transformer called as stock diffusers Wan I2V does (36 channels, 512 text + 257 CLIP tokens) and one ViSM
denoising step as ViSMPipeline runs it (cat of noise with the mask/render condition, then the forward).
"stages" runs STraG (49 frames, given depth) then ViSM (orbit) with CFG 6 in each memory mode of MoRe4DPipeline,
the STraG models released before ViSM is built, and reports seconds and peak GPU memory per stage.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from more4d.models.vism import WAN_FUN_14B_INP_CONFIG, build_random, build_vism_transformer
from more4d.pipelines.vism import ViSMPipeline
from more4d.testing import make_test_scene

MODES = ("full", "model_cpu_offload", "low_vram", "sequential_cpu_offload")
CLIP_VIT_H = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                  image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu")


def timed_stages(pipe: ViSMPipeline, times: dict[str, float]) -> None:
    """Accumulate wall time per stage (render, condition, text, clip, denoise, decode) into `times`."""
    import more4d.pipelines.vism as vism

    def wrap(owner, attr, name):
        fn = getattr(owner, attr)

        def run(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            times[name] += time.perf_counter() - t
            return out

        setattr(owner, attr, run)

    for attr, name in (("render_views", "render"), ("encode_condition", "condition"),
                       ("encode_clip_image", "clip"), ("vae_decode", "decode")):
        wrap(vism, attr, name)
    wrap(pipe, "encode_text", "text")


def bench_tiny(args: argparse.Namespace) -> None:
    from more4d.weights import TINY_DIR, save_random_tiny

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = TINY_DIR if (TINY_DIR / "vism").is_dir() else save_random_tiny(Path(tmp) / "tiny", seed=0)
        pipe = ViSMPipeline.from_preset("tiny", folder, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    scene = make_test_scene(T=args.frames or 17, H=args.size, W=args.size, seed=0)
    times: dict[str, float] = defaultdict(float)
    timed_stages(pipe, times)
    totals = []
    for r in range(args.repeats):
        times.clear()
        t, cpu = time.perf_counter(), time.process_time()
        pipe(scene, "orbit", num_inference_steps=args.steps, seed=0)
        totals.append(time.perf_counter() - t)
        other = totals[-1] - sum(times.values())
        print(f"run {r}: {totals[-1]:.2f} s wall, {time.process_time() - cpu:.2f} s process CPU  ["
              + ", ".join(f"{k} {v:.2f}" for k, v in times.items()) + f", denoise+other {other:.2f}]")
    d = pipe.defaults
    print(f"tiny ViSM {scene.num_frames}x{args.size}x{args.size}, {args.steps or d['num_inference_steps']} steps, "
          f"CFG {d['guidance_scale']}: median {np.median(totals):.2f} s, min {min(totals):.2f} s (target <= 15 s)")


def cuda_time(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / iters


@torch.no_grad()
def bench_forward(args: argparse.Namespace) -> None:
    device, dtype = torch.device(args.device), torch.bfloat16
    t = time.perf_counter()
    model = build_random(lambda: build_vism_transformer(WAN_FUN_14B_INP_CONFIG), device, dtype)
    if args.attention:
        model.set_attention_backend(args.attention)
    print(f"built 14B InP transformer ({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params) "
          f"in {time.perf_counter() - t:.0f} s")
    T, H, W = args.frames or 49, 368, 512
    tl, h, w = (T - 1) // 4 + 1, H // 8, W // 8
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(1, 36, tl, h, w, device=device, dtype=dtype, generator=g)
    text = torch.randn(1, 512, 4096, device=device, dtype=dtype, generator=g)
    img = torch.randn(1, 257, 1280, device=device, dtype=dtype, generator=g)
    step_t = torch.tensor([500.0], device=device)
    latents = torch.randn(1, 16, tl, h, w, device=device, generator=g)
    cond = torch.randn(1, 20, tl, h, w, device=device, dtype=dtype, generator=g)

    def stock():
        model(x, step_t, text, img, return_dict=False)

    def vism_step():
        model(torch.cat([latents.to(dtype), cond], dim=1), step_t, text, img, return_dict=False)

    torch.cuda.reset_peak_memory_stats(device)
    s = cuda_time(stock, args.iters, args.warmup)
    v = cuda_time(vism_step, args.iters, args.warmup)
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"{T}x{H}x{W} ({tl * h * w // 4} tokens): stock Wan forward {s:.3f} s, ViSM step forward {v:.3f} s "
          f"(ratio {v / s:.3f}); 50 CFG steps ~ {100 * v:.0f} s; peak {peak:.1f} GiB")


def bench_stages(args: argparse.Namespace) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from more4d.models.builders import build_full_strag_components
    from more4d.pipelines.more4d import apply_memory_mode
    from more4d.pipelines.strag import STraGPipeline

    device, dtype = torch.device(args.device), torch.bfloat16
    T = args.frames or 49
    rng = np.random.default_rng(0)
    image = (rng.random((368, 512, 3)) * 255).astype(np.uint8)
    depth = np.full((368, 512), 3.0, dtype=np.float32)
    for mode in MODES if args.mode == "all" else (args.mode,):
        target = device if mode == "full" else torch.device("cpu")
        torch.cuda.empty_cache()
        t0 = time.perf_counter()
        # random weights are filled on the GPU (minutes faster than on the CPU), then moved where the mode loads them
        comps = build_random(lambda: build_full_strag_components(device="cpu"), device, dtype)
        vae = comps.pop("vae").to(target)  # the Wan2.1 VAE: ViSM's too
        # CLIP ViT-H: image tokens for both transformers (as the 14B preset shares vism/image_encoder)
        comps["image_encoder"] = build_random(lambda: CLIPVisionModel(CLIPVisionConfig(**CLIP_VIT_H)), device, dtype)
        comps = {k: v.to(target) if isinstance(v, torch.nn.Module) else v for k, v in comps.items()}
        print(f"{mode:>22}: STraG models built and placed on {target} in {time.perf_counter() - t0:.0f} s", flush=True)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        strag = STraGPipeline(**comps, depth_estimator=None, resolution=(368, 512),
                              defaults=dict(num_frames=T, guidance_scale=6.0, shift=5.0))
        strag.enable_vae_tiling()  # as the wan2.1-14b preset does
        apply_memory_mode(strag, mode, device, dtype)
        strag.set_progress_bar_config(disable=True)
        t1 = time.perf_counter()
        scene = strag(image, "a dog runs to the left", depth=depth, num_frames=T, num_inference_steps=args.steps)
        t2 = time.perf_counter()
        peak_strag = torch.cuda.max_memory_allocated(device) / 2**30
        print(f"{mode:>22}: STraG build {t1 - t0:.0f} s, run {t2 - t1:.1f} s, peak {peak_strag:.1f} GiB", flush=True)
        text_encoder, tokenizer, image_encoder = strag.text_encoder, strag.tokenizer, strag.image_encoder
        del comps  # the pipeline must hold the last references for `release` to free them
        strag.release("motion_vae", "transformer", "motion_encoder")
        del strag
        held = torch.cuda.memory_allocated(device) / 2**30
        t3 = time.perf_counter()
        vism = ViSMPipeline(
            transformer=build_random(lambda: build_vism_transformer(WAN_FUN_14B_INP_CONFIG), device, dtype).to(target),
            vae=vae,
            image_encoder=image_encoder, text_encoder=text_encoder, tokenizer=tokenizer,  # placed (or hooked) already
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
        vism.enable_vae_tiling()
        apply_memory_mode(vism, mode, device, dtype)
        vism.set_progress_bar_config(disable=True)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device) / 2**30
        t4 = time.perf_counter()
        vism(scene, "orbit", num_inference_steps=args.steps, guidance_scale=6.0, seed=0)
        t5 = time.perf_counter()
        peak_vism = torch.cuda.max_memory_allocated(device) / 2**30
        print(f"{mode:>22}: ViSM build {t4 - t3:.0f} s, run {t5 - t4:.1f} s, peak {peak_vism:.1f} GiB (after STraG's release "
              f"{held:.1f} GiB, ViSM loaded {resident:.1f} GiB) | {args.steps} CFG steps")
        vism.release()
        del vism, text_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("tiny", "14b"), default="tiny")
    parser.add_argument("--what", choices=("forward", "stages"), default="forward", help="14b: what to measure")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=None, help="default: 17 (tiny), 49 (14b)")
    parser.add_argument("--size", type=int, default=256, help="tiny: square output size")
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's (tiny) / 2 (14b stages)")
    parser.add_argument("--repeats", type=int, default=2, help="tiny: runs")
    parser.add_argument("--iters", type=int, default=5, help="14b forward: timed iterations")
    parser.add_argument("--warmup", type=int, default=2, help="14b forward: warm-up iterations")
    parser.add_argument("--mode", choices=(*MODES, "all"), default="all", help="14b stages: memory mode")
    parser.add_argument("--attention", default=None, help="attention backend, e.g. flash, _native_cudnn")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (tiny)")
    args = parser.parse_args()
    if args.scale == "tiny":
        bench_tiny(args)
    elif args.what == "forward":
        bench_forward(args)
    else:
        args.steps = args.steps or 2
        bench_stages(args)


if __name__ == "__main__":
    main()
