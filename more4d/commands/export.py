"""`more4d export SCENE --format ply|glb|txt|mp4 --out PATH`: write a Scene4D in another format."""

from __future__ import annotations

import argparse

from more4d.export import EXPORT_FORMATS

FORMAT_HELP = {
    "ply": "zip of per-frame PLY point clouds (visible tracks, OpenCV coords, rgb)",
    "glb": "one GLB with a point-cloud node per frame (glTF axes)",
    "txt": "zip of the seed's per-frame 'x y z r g b' text files",
    "mp4": "preview video rendered from the input camera",
}


def register(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name, help=help_text, description=help_text,
        epilog="formats: " + "; ".join(f"{k}: {v}" for k, v in FORMAT_HELP.items()),
    )
    parser.add_argument("scene", metavar="SCENE", help="a Scene4D .safetensors file (from `more4d generate`)")
    parser.add_argument("--format", "-f", required=True, choices=EXPORT_FORMATS, help="output format")
    parser.add_argument("--out", "-o", required=True, metavar="PATH", help="output file (.zip, .glb or .mp4)")
    return parser


def run(args: argparse.Namespace) -> int:
    from more4d.export import export_preview_mp4, export_scene
    from more4d.scene import Scene4D

    scene = Scene4D.load(args.scene)
    if args.format == "mp4":
        out = export_preview_mp4(scene, args.out, progress=True)
    else:
        out = export_scene(scene, args.out, args.format)
    print(f"wrote {out} ({args.format}, {scene.num_frames} frames x {scene.num_points} points)")
    return 0
