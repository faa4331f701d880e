"""`more4d presets`: list the camera-path presets with a one-line description each."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name, help=help_text,
        description=f"{help_text}. Presets start at the input camera and scale with the scene's centroid depth.",
    )


def run(args: argparse.Namespace) -> int:
    from more4d.camera import PRESETS

    width = max(len(name) for name in PRESETS)
    for name, (description, _) in PRESETS.items():
        print(f"{name:<{width}}  {description}")
    return 0
