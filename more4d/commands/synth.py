"""`more4d synth`: write TrajScene-Synth clips (exact depth, 3D tracks, visibility, novel views) + index."""

from __future__ import annotations

import argparse
import time

# SynthConfig's draw probabilities, each a flag (--photo-prob, ...) with its help
DRAW_PROBABILITIES = {
    "photo_prob": "chance that a surface wears a real photo (scikit-image's; needs scikit-image) instead of its "
                  "procedural pattern",
    "unnamed_prob": "chance that a clip with one moving object names it by an everyday noun, 'the dog moves left', "
                    "instead of its colour and shape",
    "large_prob": "chance that an object is stretched 1.5-3x, as large as a photo's subject",
    "closeup_prob": "chance that a clip is a close-up of one photo-wearing subject, the only thing that moves, as "
                    "photos frame theirs",
    "part_prob": "in a close-up, chance that each other object is a part of the subject (a head, an arm) and moves "
                 "with it",
}


def register(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=f"{help_text}. Clips are named synth_<seed> and "
                              "listed in OUT/index.jsonl; existing clips are kept.")
    p.add_argument("--num-clips", type=int, default=8, help="number of clips (default 8)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="first seed; clip k uses seed + k (default 0)")
    p.add_argument("--frames", type=int, default=None, help="frames per clip, 4k+1 (default 17; 49 with --paper-scale)")
    p.add_argument("--height", type=int, default=None, help="height in pixels (default 256; 368 with --paper-scale)")
    p.add_argument("--width", type=int, default=None, help="width in pixels (default 256; 512 with --paper-scale)")
    p.add_argument("--novel-views", type=int, default=2, help="novel camera paths rendered per clip (default 2)")
    for field, text in DRAW_PROBABILITIES.items():
        p.add_argument(f"--{field.replace('_', '-')}", type=float, default=0.0, help=f"{text} (default 0)")
    p.add_argument("--paper-scale", action="store_true", help="the paper's 49 x 368 x 512 clips")
    p.add_argument("--device", default="cpu", help="torch device for rendering (default cpu)")
    p.add_argument("--batch-size", type=int, default=1, help="clips rendered together (use 16-64 on a GPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is fastest on a busy machine; default: torch's choice)")
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from more4d.data import SynthConfig, generate_clips, write_clip
    from more4d.data.index import INDEX_NAME, entry_for_clip, write_index
    from more4d.errors import InputError

    if args.num_clips < 1:
        raise InputError(f"--num-clips must be >= 1, got {args.num_clips}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    base = SynthConfig.paper_scale() if args.paper_scale else SynthConfig()
    config = SynthConfig(num_frames=args.frames or base.num_frames, height=args.height or base.height,
                         width=args.width or base.width, novel_views=args.novel_views,
                         **{field: getattr(args, field) for field in DRAW_PROBABILITIES})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [s for s in range(args.seed, args.seed + args.num_clips) if not (out / f"synth_{s:06d}").exists()]
    start = time.perf_counter()
    for i in range(0, len(seeds), args.batch_size):
        chunk = seeds[i:i + args.batch_size]
        for seed, clip in zip(chunk, generate_clips(chunk, config, args.device, batch_size=args.batch_size)):
            write_clip(clip, out / f"synth_{seed:06d}")
        print(f"{min(i + args.batch_size, len(seeds))}/{len(seeds)} clips", flush=True)
    entries = [entry_for_clip(out / f"synth_{s:06d}", out)
               for s in range(args.seed, args.seed + args.num_clips)]
    write_index(entries, out / INDEX_NAME)
    print(f"wrote {len(seeds)} clips ({args.num_clips - len(seeds)} already there) to {out} in "
          f"{time.perf_counter() - start:.1f} s; index: {out / INDEX_NAME}")
    return 0
