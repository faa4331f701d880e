"""Paper-scale 4D-STraG training steps on several GPUs: FSDP2 or DeepSpeed ZeRO-3, step time, tokens/s, memory.

    export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
    torchrun --nproc-per-node 8 bench/bench_train_multigpu.py --engine fsdp  --out bench/train_multigpu.jsonl
    torchrun --nproc-per-node 8 bench/bench_train_multigpu.py --engine zero3 --out bench/train_multigpu.jsonl
    (bench/bench_train_multigpu.sh runs both engines for 2, 4, ... GPUs and prints the table)

The 14B STraGTransformer (Wan2.1-I2V-14B layout + MPM + MAdaNorm, ~17B parameters) is built on the meta device
and materialised shard by shard (FSDP2: `fully_shard` on meta, `to_empty`, seeded per-shard init; ZeRO-3: built
inside `deepspeed.zero.Init`, partitioned as constructed) - nothing is downloaded or held whole on one GPU. Batches
have the shapes of TrajScene-Synth clips at 49x368x512 after the frozen encoders (motion latent 16x13x46x64,
48 condition channels, 512 umT5 tokens, MPM features 768x14x14: 9,568 video tokens per clip), drawn from a seeded
generator; the loss is the flow-matching velocity MSE of train/train_strag.py. bf16 compute, fp32 master weights
and AdamW (lr 2e-5, wd 3e-2), gradient checkpointing. After `--steps` steps a checkpoint is written, reloaded into
a fresh model/optimizer and one more step is compared with the step taken before saving (resume check).
CPU smoke test of the FSDP path: `torchrun --nproc-per-node 2 bench/bench_train_multigpu.py --scale tiny --steps 2`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

for _key, _value in {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                     "NVSHMEM_DISABLE_NVLS": "1"}.items():
    os.environ[_key] = _value  # NVLink multicast off before any process group exists

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from more4d.models.strag_transformer import TINY_STRAG_CONFIG, WAN_14B_STRAG_CONFIG, STraGTransformer  # noqa: E402
from more4d.parallel import init_distributed  # noqa: E402

ZERO3_CONFIG = {  # train/accelerate/deepspeed_zero3_offload.json without "auto" values (no accelerate here)
    "bf16": {"enabled": True},
    "zero_optimization": {"stage": 3, "overlap_comm": True, "contiguous_gradients": True,
                          "stage3_gather_16bit_weights_on_model_save": False},
    "gradient_clipping": 1.0, "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
    "steps_per_print": 1_000_000, "wall_clock_breakdown": False,
}


def batch(config: dict, frames: int, height: int, width: int, size: int, step: int, device: torch.device) -> dict:
    """Seeded synthetic batch with the encoder-output shapes of TrajScene-Synth clips (rank-dependent seed)."""
    g = torch.Generator().manual_seed(1000 * step + (dist.get_rank() if dist.is_initialized() else 0))
    f, h, w = (frames - 1) // 4 + 1, height // 8, width // 8
    text = 512 if config["text_dim"] == 4096 else 32
    x = dict(latents=torch.randn(size, 16, f, h, w, generator=g), cond=torch.randn(size, 48, f, h, w, generator=g),
             embeds=torch.randn(size, text, config["text_dim"], generator=g),
             features=torch.randn(size, config["motion_feature_dim"], 14, 14, generator=g),
             sigma=torch.rand(size, generator=g), noise=torch.randn(size, 16, f, h, w, generator=g))
    return {k: v.to(device) for k, v in x.items()}


def loss_fn(model: torch.nn.Module, b: dict) -> torch.Tensor:
    """Flow matching: x_t = (1 - s) x0 + s e, target e - x0 (as more4d/training/flow.py)."""
    s = b["sigma"].view(-1, 1, 1, 1, 1)
    x_t = (1 - s) * b["latents"] + s * b["noise"]
    inp = torch.cat([x_t, b["cond"]], dim=1).to(torch.bfloat16)
    with torch.autocast(b["latents"].device.type, dtype=torch.bfloat16):
        pred = model(hidden_states=inp, timestep=b["sigma"] * 1000, encoder_hidden_states=b["embeds"].bfloat16(),
                     motion_features=b["features"].bfloat16(), return_dict=False)[0]
    return torch.nn.functional.mse_loss(pred.float(), b["noise"] - b["latents"])


# engines ---------------------------------------------------------------------------------------------------------

def build_fsdp(config: dict, device: torch.device, lr: float) -> tuple:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    with torch.device("meta"):
        model = STraGTransformer(**config)
    buffers = {n: b for n, b in STraGTransformer(**{**config, "num_layers": 0}).named_buffers()}  # rope tables
    model.enable_gradient_checkpointing()
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in model.blocks:
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    model.to_empty(device=device)
    for name, value in buffers.items():
        owner, _, attr = name.rpartition(".")
        model.get_submodule(owner)._buffers[attr] = value.to(device)
    gen = torch.Generator(device).manual_seed(dist.get_rank())  # per-shard values, one stream per rank
    with torch.no_grad():
        for name, p in model.named_parameters():
            local = p.to_local()
            if name.endswith("bias"):
                local.zero_()
            elif p.ndim == 1:
                local.fill_(0.1 if name.endswith(".gate") else 1.0)  # norms 1; MAdaNorm gates on
            else:
                local.normal_(0.0, 0.02, generator=gen)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=3e-2)
    return model, optimizer


def step_fsdp(model, optimizer, b) -> float:
    loss = loss_fn(model, b)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach().item()


def save_fsdp(model, optimizer, path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, optimizer)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(path))


def load_fsdp(model, optimizer, path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, optimizer)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def build_zero3(config: dict, device: torch.device, lr: float, offload: bool) -> tuple:
    import deepspeed

    ds = json.loads(json.dumps(ZERO3_CONFIG))
    if offload:
        ds["zero_optimization"] |= {"offload_optimizer": {"device": "cpu", "pin_memory": True},
                                    "offload_param": {"device": "cpu", "pin_memory": True}}
    with deepspeed.zero.Init(config_dict_or_path=ds, dtype=torch.bfloat16):
        model = STraGTransformer(**config)
    model.enable_gradient_checkpointing()
    optimizer = (deepspeed.ops.adam.DeepSpeedCPUAdam if offload else torch.optim.AdamW)(
        model.parameters(), lr=lr, weight_decay=3e-2)
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds)
    return engine, optimizer


def step_zero3(engine, optimizer, b) -> float:
    loss = loss_fn(engine, b)
    engine.backward(loss)
    engine.step()
    return loss.detach().item()


# run -------------------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("fsdp", "zero3", "zero3_offload"), default="fsdp")
    parser.add_argument("--scale", choices=("14b", "tiny"), default="14b")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps (timed after --warmup)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--height", type=int, default=368)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1, help="clips per GPU")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--checkpoint-dir", default="/tmp/more4d_bench_ckpt")
    parser.add_argument("--out", default="bench/train_multigpu.jsonl")
    args = parser.parse_args()

    info = init_distributed()
    device, world = info.device, info.world_size
    config = dict(WAN_14B_STRAG_CONFIG if args.scale == "14b" else TINY_STRAG_CONFIG)
    if args.scale == "tiny":
        args.frames, args.height, args.width = min(args.frames, 5), min(args.height, 64), min(args.width, 64)
    zero = args.engine.startswith("zero3")
    build = (lambda: build_zero3(config, device, args.lr, args.engine == "zero3_offload")) if zero else (
        lambda: build_fsdp(config, device, args.lr))
    step = step_zero3 if zero else step_fsdp
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    model, optimizer = build()
    build_s = time.perf_counter() - t
    losses, times = [], []
    for i in range(args.warmup + args.steps):
        b = batch(config, args.frames, args.height, args.width, args.batch, i, device)
        dist.barrier()
        t = time.perf_counter()
        losses.append(step(model, optimizer, b))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None

    # checkpoint, fresh model, resume: the next step must give the same loss
    ckpt = Path(args.checkpoint_dir) / f"{args.engine}_{world}"
    if info.is_main and ckpt.exists():
        shutil.rmtree(ckpt)
    dist.barrier()
    t = time.perf_counter()
    if zero:
        model.save_checkpoint(str(ckpt), tag="bench")
    else:
        save_fsdp(model, optimizer, ckpt)
    save_s = time.perf_counter() - t
    nxt = batch(config, args.frames, args.height, args.width, args.batch, 10_000, device)
    expected = step(model, optimizer, nxt)
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    model, optimizer = build()
    t = time.perf_counter()
    if zero:
        model.load_checkpoint(str(ckpt), tag="bench")
    else:
        load_fsdp(model, optimizer, ckpt)
    load_s = time.perf_counter() - t
    resumed = step(model, optimizer, nxt)

    step_s = torch.tensor(sum(times) / len(times), device="cpu")
    dist.all_reduce(step_s, op=dist.ReduceOp.MAX)
    peaks = [None] * world
    dist.all_gather_object(peaks, peak)
    tokens = args.batch * world * ((args.frames - 1) // 4 + 1) * (args.height // 16) * (args.width // 16)
    row = dict(engine=args.engine, gpus=world, scale=args.scale, clip=f"{args.frames}x{args.height}x{args.width}",
               batch_per_gpu=args.batch, steps=args.steps, step_s=round(step_s.item(), 3),
               tokens_per_s=round(tokens / step_s.item(), 1), clips_per_s=round(args.batch * world / step_s.item(), 3),
               peak_gib_per_gpu=[None if p is None else round(p, 2) for p in peaks], build_s=round(build_s, 1),
               save_s=round(save_s, 1), load_s=round(load_s, 1), first_loss=round(losses[0], 4),
               last_loss=round(losses[-1], 4), resume_loss=resumed, expected_loss=expected,
               resume_ok=abs(resumed - expected) <= 1e-3 * max(1.0, abs(expected)),
               device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", torch=torch.__version__)
    if info.is_main:
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
