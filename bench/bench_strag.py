"""Benchmark: one STraG transformer forward (MPM on) vs the stock diffusers Wan forward, same weights, same run.

Paper shape 49x368x512 (latent 13x46x64, 9,568 tokens), Wan2.1-I2V-14B config, random bf16 weights built on the
meta device and materialised on the GPU (the stock model shares the STraG model's tensors: one copy in memory).
Reports median seconds per forward at batch 1 and at the CFG batch 2, analytic FLOPs and MFU against a measured
bf16 matmul peak. Options: torch.compile of the repeated blocks, fused QKV projections, attention backends.

    python bench/bench_strag.py --device cuda --batch 1 2 --attention-backend native _native_cudnn \
        --fuse-qkv --compile
    python bench/bench_strag.py --tiny-cpu          # the embedded default at 17x256x256 on the CPU
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

from more4d.models.strag_transformer import TINY_STRAG_CONFIG, WAN_14B_STRAG_CONFIG, STraGTransformer

TEXT_TOKENS, IMAGE_TOKENS = 512, 257


def build(cls: type, config: dict, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """`cls(**config)` built on the meta device, materialised on `device` with seeded random weights."""
    with torch.device("meta"):
        model = cls(**config)
    keep = set(cls._keep_in_fp32_modules or ())
    for name, p in model.named_parameters():
        p.data = p.data.to(torch.float32 if keep & set(name.split(".")) else dtype)
    model.to_empty(device=device)
    g = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gate"):
                p.fill_(0.1)  # MPM active (speed does not depend on it, numerics stay sane)
            elif p.ndim >= 2:
                p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()), generator=g)
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
    return _fresh_rope(model, device).eval()


def _fresh_rope(model, device):
    c = model.config  # rotary tables are non-persistent buffers: rebuild them after to_empty / assign
    model.rope = WanRotaryPosEmbed(c.attention_head_dim, c.patch_size, c.rope_max_seq_len).to(device)
    return model


def stock_sharing(strag: STraGTransformer, device: torch.device) -> WanTransformer3DModel:
    """A stock WanTransformer3DModel whose parameters are the STraG model's tensors (no extra memory)."""
    config = {k: v for k, v in strag.config.items() if not k.startswith("_") and k not in ("motion_feature_dim",
                                                                                             "seed_compat")}
    with torch.device("meta"):
        stock = WanTransformer3DModel(**config)
    shared = {k: v for k, v in strag.state_dict().items() if "motion" not in k}
    stock.load_state_dict(shared, strict=True, assign=True)
    return _fresh_rope(stock, device).eval()


def forward_flops(c: dict, latent: tuple[int, int, int], text: int, image: int, mpm: bool) -> float:
    """Analytic FLOPs of one forward of one sample (matmuls and attention; 2 per multiply-add)."""
    t, h, w = latent
    p_t, p_h, p_w = c["patch_size"]
    tokens, spatial = (t // p_t) * (h // p_h) * (w // p_w), (h // p_h) * (w // p_w)
    d, f = c["num_attention_heads"] * c["attention_head_dim"], c["ffn_dim"]
    context = text + image
    block = (4 * 2 * tokens * d * d + 2 * 2 * tokens * tokens * d  # self-attention
             + 2 * 2 * tokens * d * d + 2 * 2 * context * d * d + 2 * 2 * tokens * context * d  # cross-attention
             + 2 * 2 * tokens * d * f)  # FFN
    if mpm:
        block += 2 * 2 * spatial * c["motion_feature_dim"] * 2 * d
    embed = 2 * tokens * c["in_channels"] * p_t * p_h * p_w * d + 2 * tokens * d * c["out_channels"] * p_t * p_h * p_w
    embed += 2 * text * (c["text_dim"] * d + d * d)
    return c["num_layers"] * block + embed


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Measured dense matmul throughput (FLOP/s) at 8192^3 (GPU) or 1024^3 (CPU)."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timeit(lambda: a @ b, device, warmup=3, iters=10 if device.type == "cuda" else 3)


def timeit(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds of `fn()` after `warmup` calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_inputs(c: dict, batch: int, latent: tuple[int, int, int], text: int, image: int,
                device: torch.device, dtype: torch.dtype) -> dict:
    g = torch.Generator(device).manual_seed(1)
    x = dict(hidden_states=torch.randn(batch, c["in_channels"], *latent, generator=g, device=device, dtype=dtype),
             timestep=torch.full((batch,), 500.0, device=device),
             encoder_hidden_states=torch.randn(batch, text, c["text_dim"], generator=g, device=device, dtype=dtype))
    if image:
        x["encoder_hidden_states_image"] = torch.randn(batch, image, c["image_dim"], generator=g, device=device,
                                                       dtype=dtype)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny-cpu", action="store_true", help="tiny config, 17x256x256, CPU fp32")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--height", type=int, default=368)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--attention-backend", nargs="+", default=["native"],
                        help="diffusers attention backends to try, e.g. native _native_cudnn flash _flash_3")
    parser.add_argument("--fuse-qkv", action="store_true", help="also time with fused QKV / KV projections")
    parser.add_argument("--compile", action="store_true", help="also time with torch.compile of the repeated blocks")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    if args.tiny_cpu:
        args.device, args.frames, args.height, args.width = "cpu", 17, 256, 256
        config, dtype, text, image = TINY_STRAG_CONFIG, torch.float32, 32, 0
    else:
        config, dtype, text, image = WAN_14B_STRAG_CONFIG, torch.bfloat16, TEXT_TOKENS, IMAGE_TOKENS
    device = torch.device(args.device)
    latent = ((args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)

    t0 = time.perf_counter()
    strag = build(STraGTransformer, config, device, dtype)
    stock = stock_sharing(strag, device)
    models = {"stock": stock, "strag+mpm": strag}
    print(f"built {sum(p.numel() for p in strag.parameters()) / 1e9:.2f}B params on {device} in "
          f"{time.perf_counter() - t0:.0f} s; latent {latent}, tokens {latent[0] * latent[1] * latent[2] // 4}")
    peak = matmul_peak(device, dtype)
    print(f"measured {dtype} matmul peak: {peak / 1e12:.3g} TFLOP/s")
    print(f"{'model':<10} {'batch':>5} {'backend':<14} {'fused':<5} {'compiled':<8} {'s/forward':>9} "
          f"{'TFLOP/s':>8} {'MFU':>6}")

    features = {b: torch.randn(b, config["motion_feature_dim"], 14, 14, device=device, dtype=dtype) for b in args.batch}
    variants = [(False, False)] + [(True, False)] * args.fuse_qkv + [(args.fuse_qkv, True)] * args.compile
    for fused, compiled in variants:
        for name, model in models.items():
            if fused:
                model.fuse_qkv_projections()
            if compiled:
                model.compile_repeated_blocks(fullgraph=True)
            for backend in args.attention_backend:
                try:
                    model.set_attention_backend(backend)
                except Exception as exc:  # backend not installed on this machine: report and go on
                    print(f"{name:<10} backend {backend}: unavailable ({type(exc).__name__}: {exc})")
                    continue
                for b in args.batch:
                    x = make_inputs(config, b, latent, text, image, device, dtype)
                    if name != "stock":
                        x["motion_features"] = features[b]
                    with torch.inference_mode():
                        sec = timeit(lambda m=model, x=x: m(**x, return_dict=False), device, args.warmup, args.iters)
                    flops = b * forward_flops(config, latent, text, image, mpm=name != "stock")
                    print(f"{name:<10} {b:>5} {backend:<14} {str(fused):<5} {str(compiled):<8} {sec:>9.3f} "
                          f"{flops / sec / 1e12:>8.3g} {flops / sec / peak:>6.1%}", flush=True)
            if fused and not compiled:
                model.unfuse_qkv_projections()  # frees the fused copies before the next model
            if device.type == "cuda":
                print(f"  peak memory so far {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
