"""`more4d generate IMAGE --prompt ... --out DIR`: image + prompt -> Scene4D (4D-STraG).

Writes DIR/scene.safetensors, DIR/preview.mp4 (the tracks splatted from the input camera) and
DIR/settings.json (every setting of the run, the input's bucket/crop/K provenance and timings).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from more4d.errors import InputError
from more4d.io import atomic_write
from more4d.pipelines.schedulers import SCHEDULERS
from more4d.weights.presets import PRESETS


def register(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    from more4d.commands.render import add_camera_arguments

    parser = subparsers.add_parser(name, help=help_text, description=__doc__.splitlines()[0])
    add_generate_arguments(parser)
    add_camera_arguments(parser, required=False)  # a camera alone: DIR/render.mp4 + mask.mp4 (splat render)
    parser.add_argument("--render", action="store_true", help="also run 4D-ViSM along the camera: DIR/final.mp4")
    return parser


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """The STraG arguments (shared by every command that generates a scene)."""
    parser.add_argument("image", help="input image (any PIL-readable file)")
    parser.add_argument("--prompt", required=True, help="the motion to generate, e.g. 'a dog runs to the left'")
    parser.add_argument("--negative-prompt", default="", help="what to avoid (used when --guidance > 1)")
    parser.add_argument("--model", default="tiny", choices=sorted(PRESETS), help="model preset (default: tiny)")
    parser.add_argument("--weights", default=None, help="local weights folder (default: the preset's own)")
    parser.add_argument("--frames", type=int, default=None, help="number of frames, 4k+1 (default: preset's)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: preset's)")
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale; <= 1 disables CFG")
    parser.add_argument("--shift", type=float, default=None, help="flow-matching timestep shift")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--scheduler", default=None, choices=SCHEDULERS, help="sampler (default: euler)")
    parser.add_argument("--resolution", type=parse_size, default=None, metavar="HxW",
                        help="working size whose area sets the bucket (default: the model's, e.g. 256x256)")
    parser.add_argument("--depth", default=None, help="your own metric depth map (.npy, (H, W), metres)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: bf16 on CUDA)")
    parser.add_argument("--cpu-offload", action="store_true", help="move each model to the GPU only while used")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the transformers (CUDA: faster steps after a one-off compile)")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")


def parse_size(text: str) -> tuple[int, int]:
    """'368x512' -> (368, 512)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 256x256, got {text!r}") from None
    return h, w


def check_out_dir(path: str) -> Path:
    """`--out` as a Path, refused if it exists and is not a folder; created only when there is a result to write."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {path!r} exists and is not a folder")
    return out


def build_pipeline(args: argparse.Namespace) -> Any:
    from more4d.pipelines.strag import STraGPipeline
    from more4d.weights import resolve_device

    device = resolve_device(args.device)
    if args.cpu_offload:
        if device.type != "cuda":
            raise InputError("--cpu-offload needs a CUDA device")
        pipe = STraGPipeline.from_preset(args.model, args.weights, device="cpu", dtype=args.dtype or "bf16")
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe = STraGPipeline.from_preset(args.model, args.weights, device=device, dtype=args.dtype)
    if args.scheduler:
        from more4d.pipelines.schedulers import make_scheduler, scheduler_shift

        pipe.scheduler = make_scheduler(args.scheduler, scheduler_shift(pipe.scheduler))
    if args.compile:
        pipe.compile_transformer()
    return pipe


def generate_scene(args: argparse.Namespace, pipe: Any) -> Any:
    return pipe(args.image, args.prompt, negative_prompt=args.negative_prompt, num_frames=args.frames,
                num_inference_steps=args.steps, guidance_scale=args.guidance, shift=args.shift, seed=args.seed,
                depth=args.depth, resolution=args.resolution)


def write_scene_outputs(scene: Any, out: Path) -> dict[str, str]:
    from more4d.export import export_preview_mp4

    out.mkdir(parents=True, exist_ok=True)
    scene.save(out / "scene.safetensors")
    export_preview_mp4(scene, out / "preview.mp4")
    return {"scene": "scene.safetensors", "preview": "preview.mp4"}


def write_settings(out: Path, args: argparse.Namespace, scene: Any, files: dict[str, str],
                   timings: dict[str, float]) -> None:
    from more4d import __version__

    cli = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "command"}
    settings = dict(more4d=__version__, command="generate", arguments=cli, scene=scene.metadata,
                    K=scene.K.tolist(), image_size=list(scene.image_size), fps=scene.fps, files=files,
                    timings_s={k: round(v, 3) for k, v in timings.items()})
    with atomic_write(out / "settings.json") as tmp:
        tmp.write_text(json.dumps(settings, indent=2, default=str))


def run(args: argparse.Namespace) -> int:
    from more4d.commands.render import camera_from_args

    out = check_out_dir(args.out)
    if args.render and args.camera_path is None and args.preset is None:
        raise InputError("--render needs a camera: add --camera-path FILE or --preset NAME")
    if args.camera_path is not None:
        camera_from_args(args)  # a malformed camera file fails now, not after the scene was generated
    t0 = time.perf_counter()
    pipe = build_pipeline(args)
    t1 = time.perf_counter()
    scene = generate_scene(args, pipe)
    t2 = time.perf_counter()
    files = write_scene_outputs(scene, out)
    from more4d.commands.render import render_after_generate

    files.update(render_after_generate(args, scene, pipe, out))
    t3 = time.perf_counter()
    write_settings(out, args, scene, files, dict(load=t1 - t0, generate=t2 - t1, write=t3 - t2))
    print(f"wrote {out / 'scene.safetensors'} ({scene.num_frames} frames, {scene.height}x{scene.width}) "
          f"and {out / 'preview.mp4'} in {t3 - t0:.1f} s")
    return 0
