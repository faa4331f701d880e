"""Multi-GPU inference: seconds per denoising step of the 14B transformers with context- and CFG-parallel.

One launch per process count; each runs every mode that count allows and appends one JSON line per mode:

    export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
    torchrun --nproc-per-node 1 bench/bench_parallel.py --out bench/parallel.jsonl      # the reference
    torchrun --nproc-per-node 2 bench/bench_parallel.py --out bench/parallel.jsonl      # context, cfg
    torchrun --nproc-per-node 4 bench/bench_parallel.py --out bench/parallel.jsonl      # context, both
    torchrun --nproc-per-node 8 bench/bench_parallel.py --out bench/parallel.jsonl      # context, both
    python bench/bench_parallel.py --summary bench/parallel.jsonl                      # markdown table

A step is one transformer forward on the CFG batch `[cond, uncond]` at 49x368x512 (latent 13x46x64, 9,568
tokens): random bf16 weights (STraG: the Wan2.1-I2V-14B layout + MPM, MAdaNorm gates 0.1; ViSM: Wan2.1-Fun-InP
14B) built on the meta device and initialised on each GPU with the same seed, seeded CPU inputs. The 1-process
run saves its outputs beside `--out`; later runs report the relative L2 error against them (bf16 tolerance:
< 2e-2). CPU dry run of the code path: `torchrun --nproc-per-node 2 bench/bench_parallel.py --scale tiny`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

for _key, _value in {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                     "NVSHMEM_DISABLE_NVLS": "1"}.items():
    os.environ[_key] = _value  # NVLink multicast off before any process group exists

import diffusers  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from more4d.models.strag_transformer import TINY_STRAG_CONFIG, WAN_14B_STRAG_CONFIG, STraGTransformer  # noqa: E402
from more4d.models.vism import TINY_VISM_CONFIG, WAN_FUN_14B_INP_CONFIG, build_random  # noqa: E402
from more4d.parallel import init_distributed, setup_parallel  # noqa: E402

REL_TOL = 2e-2
MODES_BY_COUNT = {1: ("single",), 2: ("context", "cfg")}  # larger counts: context, both
SCALES = {  # model -> scale -> (config, latent frames, latent h, latent w, text tokens, image tokens)
    "strag": {"14b": (WAN_14B_STRAG_CONFIG, 13, 46, 64, 512, 0), "tiny": (TINY_STRAG_CONFIG, 5, 32, 32, 32, 0)},
    "vism": {"14b": (WAN_FUN_14B_INP_CONFIG, 13, 46, 64, 512, 257), "tiny": (TINY_VISM_CONFIG, 5, 32, 32, 512, 5)},
}


def build(model: str, scale: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Seeded random transformer (the same weights on every rank): meta build, `to_empty`, `init_random_`."""
    config = SCALES[model][scale][0]
    if model == "strag":
        net = build_random(lambda: STraGTransformer(**config), device, dtype, seed=0)
        with torch.no_grad():
            for name, p in net.named_parameters():
                if name.endswith(".gate"):
                    p.fill_(0.1)  # MAdaNorm on (zero gates would make it the identity)
        return net
    from diffusers import WanTransformer3DModel

    return build_random(lambda: WanTransformer3DModel(**config), device, dtype, seed=0)


def inputs(model: str, scale: str, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The CFG batch (2) of seeded inputs, drawn on the CPU (identical on every rank)."""
    config, f, h, w, text, image = SCALES[model][scale]
    g = torch.Generator().manual_seed(0)
    x = dict(hidden_states=torch.randn(2, config["in_channels"], f, h, w, generator=g),
             timestep=torch.tensor([500.0, 500.0]),
             encoder_hidden_states=torch.randn(2, text, config["text_dim"], generator=g))
    if model == "strag":
        x["motion_features"] = torch.randn(2, config["motion_feature_dim"], 14, 14, generator=g)
    if image:
        x["encoder_hidden_states_image"] = torch.randn(2, image, config["image_dim"], generator=g)
    return {k: v.to(device, dtype) if v.is_floating_point() and k != "timestep" else v.to(device)
            for k, v in x.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if dist.is_initialized():
        dist.barrier()


def run_mode(args: argparse.Namespace, model: str, mode: str, world: int, device: torch.device) -> dict:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    net = build(model, args.scale, device, dtype).eval()
    build_s = time.perf_counter() - t
    if args.attention:
        net.set_attention_backend(args.attention)
    plan = setup_parallel(net, world, "context" if mode == "single" else mode, ring_degree=args.ring_degree)
    x = inputs(model, args.scale, device, dtype)
    times = []
    with torch.no_grad():
        for i in range(args.warmup + args.steps):
            sync(device)
            t = time.perf_counter()
            out = net(**x, return_dict=False)[0]
            sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t)
    step = torch.tensor(statistics.median(times))
    if dist.is_initialized():
        dist.all_reduce(step, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    row = dict(model=model, mode=mode, gpus=world, cfg=plan.cfg, ring=plan.ring, ulysses=plan.ulysses,
               scale=args.scale, step_s=round(step.item(), 4), peak_gib=None if peak is None else round(peak, 2), build_s=round(build_s, 1),
               attention=args.attention or "native", device=torch.cuda.get_device_name(device)
               if device.type == "cuda" else platform.processor() or "cpu",
               torch=torch.__version__, diffusers=diffusers.__version__)
    ref_file = Path(args.out).with_name(f"{Path(args.out).stem}_ref_{model}_{args.scale}.pt")
    out = out.float().cpu()
    if world == 1 and (dist.get_rank() if dist.is_initialized() else 0) == 0:
        torch.save(out, ref_file)
    elif ref_file.is_file():
        ref = torch.load(ref_file, weights_only=True)
        row["rel_l2"] = float((out - ref).norm() / ref.norm())
        row["max_abs"] = float((out - ref).abs().max())
        row["match"] = row["rel_l2"] < REL_TOL
    del net, out
    return row


def summary(path: str) -> str:
    """Markdown table: per-step seconds and speed-up against the 1-process run of the same model and device."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    base = {(r["model"], r["device"], r["scale"]): r["step_s"] for r in rows if r["gpus"] == 1}
    lines = ["| model | mode | GPUs | cfg x ring x ulysses | s/step | speed-up | peak GiB | rel L2 vs 1 GPU |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["model"], r["gpus"], r["mode"])):
        b = base.get((r["model"], r["device"], r["scale"]))
        speed = f"{b / r['step_s']:.2f}x" if b else "-"
        err = f"{r['rel_l2']:.1e}" if "rel_l2" in r else "-"
        lines.append(f"| {r['model']} | {r['mode']} | {r['gpus']} | {r['cfg']}x{r['ring']}x{r['ulysses']} | "
                     f"{r['step_s']:.3f} | {speed} | {r['peak_gib']} | {err} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["strag", "vism"], choices=sorted(SCALES))
    parser.add_argument("--modes", nargs="+", default=None, help="default: every mode this process count allows")
    parser.add_argument("--scale", default="14b", choices=("14b", "tiny"))
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--attention", default=None, help="attention backend, e.g. _native_cudnn (ring needs LSE)")
    parser.add_argument("--ring-degree", type=int, default=1)
    parser.add_argument("--out", default="bench/parallel.jsonl", help="JSON lines file to append to")
    parser.add_argument("--summary", default=None, metavar="JSONL", help="print the table of a results file")
    args = parser.parse_args()
    if args.summary:
        print(summary(args.summary))
        return
    info = init_distributed()
    modes = args.modes or MODES_BY_COUNT.get(info.world_size, ("context", "both"))
    for model in args.models:
        for mode in modes:
            row = run_mode(args, model, mode, info.world_size, info.device)
            if info.is_main:
                print(json.dumps(row), flush=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
