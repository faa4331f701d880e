"""`more4d build-data`: turn a folder of mp4s into TrajScene clips (depth + dense 3D tracks) + index."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=f"{help_text}. Captions come from <video>.txt; "
                              "a clip that fails is reported and skipped, never half-written.")
    p.add_argument("videos", help="folder of .mp4 files (captions in <name>.txt beside them)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--frames", type=int, default=17, help="frames per clip (default 17)")
    p.add_argument("--stride", type=int, default=1, help="take every k-th video frame (default 1)")
    p.add_argument("--clips-per-video", type=int, default=1, help="evenly spaced clips per video (default 1)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="resize (cover) and centre-crop clips to H W (default: keep the video size)")
    p.add_argument("--flow", choices=("dis", "farneback"), default="dis", help="OpenCV optical flow (default dis)")
    p.add_argument("--fb-threshold", type=float, default=1.0, help="forward-backward error (px) that loses a track")
    p.add_argument("--depth", default="tiny", help="'tiny' (embedded weights), 'unidepth' (needs --depth-weights)")
    p.add_argument("--depth-weights", default=None, help="local weights folder for the depth estimator")
    p.add_argument("--default-caption", default=None, help="caption for videos without a .txt (default: error)")
    p.add_argument("--device", default="cpu", help="torch device for the depth estimator")
    return p


def _depth_estimator(args: argparse.Namespace):
    from pathlib import Path

    from more4d.errors import InputError

    if args.depth == "tiny":
        from more4d.depth import TinyDepthEstimator, TinyDepthNet

        folder = Path(args.depth_weights) if args.depth_weights else Path(__file__).parents[2] / "assets/weights/tiny/depth"
        if not folder.is_dir():
            raise InputError(f"tiny depth weights {str(folder)!r} not found; pass --depth-weights")
        return TinyDepthEstimator.from_net(TinyDepthNet.from_pretrained(folder)).to(args.device)
    if args.depth == "unidepth":
        from more4d.depth import UniDepthEstimator, unidepth_available

        if not unidepth_available() or not args.depth_weights:
            raise InputError("--depth unidepth needs the 'unidepth' package and --depth-weights (a local folder)")
        return UniDepthEstimator(args.depth_weights, device=args.device)
    raise InputError(f"--depth must be 'tiny' or 'unidepth', got {args.depth!r}")


def run(args: argparse.Namespace) -> int:
    from more4d.data.builder import BuildConfig, build_dataset

    config = BuildConfig(num_frames=args.frames, stride=args.stride, clips_per_video=args.clips_per_video,
                         size=tuple(args.size) if args.size else None, flow=args.flow,
                         fb_threshold=args.fb_threshold, default_caption=args.default_caption)
    summary = build_dataset(args.videos, args.out, _depth_estimator(args), config=config,
                            progress=lambda name: print(f"building {name}", flush=True))
    print(summary)
    return 0 if summary.written else 1
