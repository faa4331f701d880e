"""`more4d render SCENE (--camera-path FILE | --preset NAME) --out DIR`: novel-view video of a Scene4D (4D-ViSM).

Writes DIR/final.mp4 (inpainted by the ViSM model), DIR/render.mp4 (the raw splat render), DIR/mask.mp4 (white
at holes); `--render-only` skips the model and writes render.mp4 and mask.mp4 alone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from more4d.errors import InputError
from more4d.weights.presets import PRESETS


def register(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=__doc__.splitlines()[0])
    parser.add_argument("scene", help="a scene file written by `more4d generate` (scene.safetensors)")
    add_camera_arguments(parser)
    add_render_arguments(parser)
    parser.add_argument("--model", default="tiny", choices=sorted(PRESETS), help="model preset (default: tiny)")
    parser.add_argument("--weights", default=None, help="local weights folder (default: the preset's own)")
    parser.add_argument("--prompt", default=None, help="text prompt (default: the scene's)")
    parser.add_argument("--negative-prompt", default="", help="what to avoid (used when --guidance > 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: bf16 on CUDA)")
    parser.add_argument("--memory-mode", default="full",
                        choices=("full", "model_cpu_offload", "low_vram", "sequential_cpu_offload"),
                        help="GPU memory strategy (default: full)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the ViSM transformer (CUDA: faster steps after a one-off compile)")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    return parser


def add_camera_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """`--camera-path FILE | --preset NAME` (shared with `more4d generate --render`)."""
    from more4d.camera import PRESET_NAMES

    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--camera-path", default=None, help="camera path JSON (more4d or nerfstudio camera_path.json)")
    group.add_argument("--preset", default=None, choices=PRESET_NAMES, help="camera preset")


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    """ViSM sampling and output options (shared with `more4d generate --render`)."""
    parser.add_argument("--render-only", action="store_true", help="write the splat render and mask only (no model)")
    parser.add_argument("--steps", type=int, default=None, help="ViSM denoising steps (default: preset's)")
    parser.add_argument("--guidance", type=float, default=None, help="ViSM CFG scale; <= 1 disables CFG")
    parser.add_argument("--height", type=int, default=None, help="output height (default: the scene's)")
    parser.add_argument("--width", type=int, default=None, help="output width (default: the scene's)")
    parser.add_argument("--fps", type=float, default=None, help="output frame rate (default: the scene's)")


def camera_from_args(args: argparse.Namespace) -> Any:
    """The camera named by `--camera-path` or `--preset`."""
    from more4d.camera import load_camera_path

    if args.camera_path is not None:
        return load_camera_path(args.camera_path)
    return args.preset


def render_to(out: Path, scene: Any, camera: Any, vism: Any = None, *, seed: int = 0, prompt: str | None = None,
              negative_prompt: str = "", steps: int | None = None, guidance: float | None = None,
              height: int | None = None, width: int | None = None, fps: float | None = None) -> dict[str, str]:
    """Render `scene` along `camera` into `out`: final.mp4 (with a ViSMPipeline `vism`), render.mp4, mask.mp4.

    Without `vism` only the splat render and its hole mask are written. Returns {role: file name}.
    """
    from more4d.io import write_video
    from more4d.pipelines.vism import resolve_camera
    from more4d.render import render_video

    trajectory = resolve_camera(camera, scene)
    fps = scene.fps if fps is None else fps
    if vism is None:
        render_video(scene, trajectory, out, fps=fps, height=height, width=width)
        return {"render": "render.mp4", "mask": "mask.mp4"}
    result = vism(scene, trajectory, prompt=prompt, negative_prompt=negative_prompt, num_inference_steps=steps,
                  guidance_scale=guidance, seed=seed, height=height, width=width, fps=fps)
    write_video(out / "final.mp4", result.frames[0], fps=fps)
    write_video(out / "render.mp4", result.render[0], fps=fps)
    write_video(out / "mask.mp4", result.mask[0], fps=fps)
    return {"final": "final.mp4", "render": "render.mp4", "mask": "mask.mp4"}


def render_after_generate(args: argparse.Namespace, scene: Any, strag: Any, out: Path) -> dict[str, str]:
    """`more4d generate --camera-path/--preset [--render]`: render the new scene (ViSM with `--render`).

    With `--render` the STraG models are released first and the text encoder is shared with ViSM.
    """
    from more4d.pipelines.vism import ViSMPipeline

    if args.camera_path is None and args.preset is None:  # `generate` refused --render without one
        return {}
    vism = None
    if args.render:
        device = strag._execution_device
        strag.release("motion_vae", "transformer", "motion_encoder", "depth_estimator")
        vism = ViSMPipeline.from_preset(args.model, args.weights, device="cpu" if args.cpu_offload else device,
                                        dtype=strag.text_encoder.dtype, text_encoder=strag.text_encoder,
                                        tokenizer=strag.tokenizer)
        if args.cpu_offload:
            vism.enable_model_cpu_offload(device=device)
        if args.compile:
            vism.compile_transformer()
    return render_to(out, scene, camera_from_args(args), vism, seed=args.seed, prompt=scene.prompt,
                     negative_prompt=args.negative_prompt)


def run(args: argparse.Namespace) -> int:
    from more4d.scene import Scene4D

    if not Path(args.scene).is_file():
        raise InputError(f"scene file {args.scene!r} does not exist")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {args.out!r} exists and is not a folder")
    t0 = time.perf_counter()
    scene = Scene4D.load(args.scene)
    camera = camera_from_args(args)
    vism = None
    if not args.render_only:
        from more4d.pipelines.more4d import MoRe4DPipeline

        vism = MoRe4DPipeline.from_preset(args.model, args.weights, device=args.device, dtype=args.dtype,
                                          memory_mode=args.memory_mode).vism
        if args.compile:
            vism.compile_transformer()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        files = render_to(out, scene, camera, vism, seed=args.seed, prompt=args.prompt,
                          negative_prompt=args.negative_prompt, steps=args.steps, guidance=args.guidance,
                          height=args.height, width=args.width, fps=args.fps)
    except BaseException:
        if created and not any(out.iterdir()):  # a refused or failed render leaves no empty --out folder
            out.rmdir()
        raise
    print(f"wrote {', '.join(str(out / f) for f in files.values())} in {time.perf_counter() - t0:.1f} s")
    return 0
