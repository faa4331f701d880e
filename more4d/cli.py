"""`more4d` command line: one sub-command per module in `more4d/commands/`.

Each command module exposes `register(subparsers) -> argparse.ArgumentParser` and `run(args) -> int`.
Only the module of the command being run is imported, so `more4d --help` and light commands stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from more4d import __version__
from more4d.errors import InputError

# command name -> module in more4d.commands (and its one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("generate", "image + prompt -> Scene4D (4D-STraG), optionally rendered (4D-ViSM)"),
    "render": ("render", "render a Scene4D along a camera path or preset (4D-ViSM)"),
    "export": ("export", "export a Scene4D as PLY zip, GLB, seed-style text or mp4 preview"),
    "presets": ("presets", "list camera-path presets"),
    "synth": ("synth", "generate TrajScene-Synth clips with exact ground truth"),
    "build-data": ("build_data", "build TrajScene clips (depth + 3D tracks) from your own videos"),
    "eval": ("evaluate", "evaluate models on held-out TrajScene-Synth seeds or TrajScene-60K samples, and real photos"),
    "weights": ("weights", "download the released MoGe4D weights (Hugging Face / ModelScope) or list them"),
    "data": ("data", "download the released TrajScene-60K archives (ModelScope) or index them"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; only `command`'s module is imported (the others are listed by name)."""
    parser = argparse.ArgumentParser(prog="more4d", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"more4d {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=help_text)
            continue
        mod = importlib.import_module(f"more4d.commands.{module}")
        cmd = mod.register(sub, name, help_text)
        cmd.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (InputError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        if args.debug:
            raise
        print(f"more4d {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
