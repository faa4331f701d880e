"""Multi-GPU launcher: `generate` or `render` on N processes, one per GPU (`more4d.parallel` does the splitting).

    torchrun --nproc-per-node 4 -m more4d.commands.parallel generate photo.jpg --prompt "a dog runs" --out out/ \
        --parallel 4 --parallel-mode both
    torchrun --nproc-per-node 2 -m more4d.commands.parallel render out/scene.safetensors --preset orbit \
        --out out/ --parallel 2

Every rank computes the same result; rank 0 writes the files. The arguments after the command are those of
`more4d generate` / `more4d render`. Not a `more4d` sub-command: torchrun starts a module per process.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch.distributed as dist

from more4d.commands import generate as generate_command
from more4d.commands import render as render_command
from more4d.errors import InputError
from more4d.parallel import PARALLEL_MODES, DistInfo, init_distributed, setup_parallel
from more4d.pipelines.more4d import MoRe4DPipeline
from more4d.scene import Scene4D


def add_parallel_arguments(parser: argparse.ArgumentParser) -> None:
    """`--parallel N`, `--parallel-mode`, `--ring-degree` (for commands launched with torchrun)."""
    parser.add_argument("--parallel", type=int, default=None,
                        help="processes to spread the transformer over (default: torchrun's WORLD_SIZE)")
    parser.add_argument("--parallel-mode", default="context", choices=PARALLEL_MODES,
                        help="context (sequence split), cfg (cond/uncond on 2 GPUs) or both (default: context)")
    parser.add_argument("--ring-degree", type=int, default=1,
                        help="context ranks using ring attention instead of Ulysses (needs a flash/cuDNN backend)")


def _run_generate(args: argparse.Namespace, info: DistInfo) -> None:
    out = generate_command.check_out_dir(args.out) if info.is_main else None
    t0 = time.perf_counter()
    pipe = generate_command.build_pipeline(args)
    setup_parallel(pipe, args.parallel, args.parallel_mode, ring_degree=args.ring_degree)
    t1 = time.perf_counter()
    scene = generate_command.generate_scene(args, pipe)
    t2 = time.perf_counter()
    if info.is_main:
        scene.metadata["parallel"] = dict(processes=args.parallel, mode=args.parallel_mode)
        files = generate_command.write_scene_outputs(scene, out)
        generate_command.write_settings(out, args, scene, files, dict(load=t1 - t0, generate=t2 - t1))
        print(f"wrote {out / 'scene.safetensors'} on {args.parallel} processes in {t2 - t1:.1f} s")


def _run_render(args: argparse.Namespace, info: DistInfo) -> None:
    if args.render_only:
        raise InputError("--render-only uses no model; run it without torchrun")
    scene = Scene4D.load(args.scene)
    pipe = MoRe4DPipeline.from_preset(args.model, args.weights, device=args.device, dtype=args.dtype,
                                      memory_mode=args.memory_mode)
    setup_parallel(pipe.vism, args.parallel, args.parallel_mode, ring_degree=args.ring_degree)
    camera = render_command.camera_from_args(args)
    with contextlib.ExitStack() as stack:  # every rank denoises the same video; rank 0 keeps the files
        out = Path(args.out) if info.is_main else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        out.mkdir(parents=True, exist_ok=True)
        files = render_command.render_scene_to(out, scene, camera, args, pipe, prompt=args.prompt)
    if info.is_main:
        print(f"wrote {', '.join(str(out / f) for f in files.values())} on {args.parallel} processes")


LAUNCHABLE: dict[str, tuple[ModuleType, Callable[[argparse.Namespace, DistInfo], None]]] = {
    "generate": (generate_command, _run_generate),
    "render": (render_command, _run_render),
}


def build_parser() -> argparse.ArgumentParser:
    """`{generate,render}` with each command's own arguments (as `more4d` parses them) and the parallel ones."""
    parser = argparse.ArgumentParser(prog="torchrun --nproc-per-node N -m more4d.commands.parallel",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(LAUNCHABLE) + "}")
    for name, (module, _) in LAUNCHABLE.items():
        add_parallel_arguments(module.register(sub, name, f"more4d {name} on every process of the torchrun job"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Join the torchrun job and run the command on every process; 2 on an input error."""
    args = build_parser().parse_args(argv)
    info = init_distributed()
    args.parallel = info.world_size if args.parallel is None else args.parallel
    if info.device.type == "cuda":  # one GPU per process
        args.device = str(info.device)
    try:
        LAUNCHABLE[args.command][1](args, info)
    except InputError as exc:
        print(f"more4d {args.command} (rank {info.rank}): error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
