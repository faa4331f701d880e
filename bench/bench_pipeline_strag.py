"""STraGPipeline end to end: seconds per stage on the CPU (tiny) and peak GPU memory per memory mode (14B).

    python bench/bench_pipeline_strag.py                               # tiny, 17x256x256, default steps, CPU
    python bench/bench_pipeline_strag.py --steps 20 --repeats 3
    python bench/bench_pipeline_strag.py --scale 14b --device cuda --mode all --steps 2   # H100, random bf16

The tiny run uses assets/weights/tiny when present, else seeded random tiny weights (same cost). The 14B run
builds the paper-scale components (STraG 14B DiT with MPM, Wan2.1 motion VAE, umT5-XXL, OmniMAE ViT-B) with
random bf16 weights on the meta device (no download, about a minute) and a given depth map (no UniDepth), then
runs 49x368x512 with CFG in each memory mode and reports the peak GPU memory of the whole call.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from more4d.pipelines.strag import STraGPipeline
from more4d.weights import TINY_DIR, save_random_tiny

MODES = ("full", "release", "offload", "offload+tiling")


def image(height: int, width: int) -> np.ndarray:
    """A smooth seeded test image `(H, W, 3)` uint8."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    rgb = np.stack([np.sin(6 * x) * 0.5 + 0.5, np.cos(4 * y) * 0.5 + 0.5, (x + y) / 2], axis=-1)
    return (rgb * 255).astype(np.uint8)


@contextmanager
def stage_timer(pipe: STraGPipeline, times: dict[str, float]):
    """Time the pipeline's stages by wrapping its stage methods (and the transformer forward)."""
    names = ("prepare_image", "encode_text", "encode_conditions", "motion_features", "decode_scene")
    originals: dict[str, Callable] = {n: getattr(pipe, n) for n in names}

    def wrap(name: str, fn: Callable) -> Callable:
        def timed(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name] += time.perf_counter() - t
            return out
        return timed

    for n, fn in originals.items():
        setattr(pipe, n, wrap(n, fn))
    fwd = pipe.transformer.forward
    pipe.transformer.forward = wrap("denoise (transformer)", fwd)
    try:
        yield
    finally:
        for n in names:
            delattr(pipe, n)
        pipe.transformer.forward = fwd


def bench_tiny(args: argparse.Namespace) -> None:
    folder = TINY_DIR if (TINY_DIR / "strag" / "transformer").is_dir() else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = folder or save_random_tiny(Path(tmp) / "tiny")
        t = time.perf_counter()
        pipe = STraGPipeline.from_preset("tiny", folder, device=args.device)
        print(f"weights: {folder} (load {time.perf_counter() - t:.2f} s); torch threads {torch.get_num_threads()}")
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_frames=args.frames, num_inference_steps=args.steps, resolution=(args.size, args.size))
    img = image(args.size, args.size)
    pipe(img, "a red ball bounces to the left", **dict(kw, num_inference_steps=1, num_frames=5))  # warm-up
    totals, cpu = [], []
    for r in range(args.repeats):
        times: dict[str, float] = defaultdict(float)
        with stage_timer(pipe, times):
            t, c = time.perf_counter(), time.process_time()
            scene = pipe(img, "a red ball bounces to the left", seed=r, **kw)
            totals.append(time.perf_counter() - t)
            cpu.append((time.process_time() - c) / torch.get_num_threads())
        stages = ", ".join(f"{k} {v:.2f}" for k, v in times.items())
        print(f"run {r}: wall {totals[-1]:.2f} s, CPU time / threads {cpu[-1]:.2f} s  [{stages}]")
    md = scene.metadata
    print(f"tiny {args.frames}x{args.size}x{args.size}, {md['num_inference_steps']} steps ({md['scheduler']}, "
          f"CFG {md['guidance_scale']}): wall median {np.median(totals):.2f} s (min {min(totals):.2f}); "
          f"CPU time / threads median {np.median(cpu):.2f} s (the wall time on an idle machine, at best)")


def build_14b(device: torch.device, offload: bool) -> STraGPipeline:
    """Paper-scale STraG components with random bf16 weights (meta-device build, `to_empty`, seeded init):
    STraG 14B (Wan2.1-I2V layout, 64 in-channels, MPM), Wan2.1 motion VAE, umT5-XXL encoder, OmniMAE ViT-B,
    CLIP ViT-H/14. The tokenizer is the tiny word-level one padded to 512 tokens (the cost is the encoder's)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    from more4d.models.motion_features import OmniMAEViT
    from more4d.models.motion_vae import MotionVAE
    from more4d.models.strag_transformer import WAN_14B_STRAG_CONFIG, STraGTransformer
    from more4d.models.text_encoder import TINY_VOCAB, build_word_tokenizer
    from more4d.models.vism import init_random_

    with torch.device("meta"):
        comps = dict(
            transformer=STraGTransformer(**WAN_14B_STRAG_CONFIG),
            motion_vae=MotionVAE(),
            text_encoder=UMT5EncoderModel(UMT5Config(
                vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                relative_attention_max_distance=128, is_encoder_decoder=False)),
            motion_encoder=OmniMAEViT(),
            image_encoder=CLIPVisionModel(CLIPVisionConfig(
                hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu")),
        )
    target = torch.device("cpu") if offload else device
    for name, module in comps.items():
        module = module.to(torch.bfloat16).to_empty(device=target)
        for buf in module.buffers():  # meta buffers (rope tables, image mean/std) need finite values
            if buf.is_floating_point():
                buf.fill_(1.0)
        comps[name] = init_random_(module, seed=0).eval()
    pipe = STraGPipeline(tokenizer=build_word_tokenizer(TINY_VOCAB, max_length=512), **comps,
                         resolution=(368, 512), defaults=dict(num_frames=49, guidance_scale=6.0, shift=5.0))
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    return pipe


def bench_14b(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    modes = MODES if args.mode == "all" else (args.mode,)
    img = image(368, 512)
    depth = np.full((368, 512), 3.0, dtype=np.float32)
    for mode in modes:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        pipe = build_14b(device, offload=mode.startswith("offload"))
        if "tiling" in mode:
            pipe.enable_vae_tiling()
        if args.attention:
            pipe.set_attention_backend(args.attention)
        pipe.set_progress_bar_config(disable=True)
        load_peak = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
        times: dict[str, float] = defaultdict(float)
        with stage_timer(pipe, times):
            t = time.perf_counter()
            pipe(img, "a dog runs to the left", depth=depth, num_frames=args.frames, num_inference_steps=args.steps,
                 release_stages=mode == "release")
            total = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        stages = ", ".join(f"{k} {v:.2f}" for k, v in times.items())
        print(f"{mode:>15}: peak {peak:.1f} GiB during the call (after load {load_peak:.1f} GiB), "
              f"{total:.1f} s for {args.steps} CFG steps  [{stages}]")
        pipe.release()
        del pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("tiny", "14b"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=None, help="default: 17 (tiny), 49 (14b)")
    parser.add_argument("--size", type=int, default=256, help="tiny: square working size")
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's (tiny) / 2 (14b)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mode", choices=(*MODES, "all"), default="all", help="14b memory mode")
    parser.add_argument("--attention", default=None, help="14b attention backend, e.g. flash, _native_cudnn")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.scale == "tiny":
        args.frames = args.frames or 17
        bench_tiny(args)
    else:
        args.frames, args.steps = args.frames or 49, args.steps or 2
        bench_14b(args)


if __name__ == "__main__":
    main()
