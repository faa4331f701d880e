"""`more4d eval [--model tiny] [--num-clips N] [--data DIR] [--photos] [--out FILE]`: held-out synth seeds or
TrajScene-60K, and real photos.

Reproduces the evaluation table of the tiny model card (assets/weights/tiny/README.md): depth AbsRel/delta1 and
depth-edge errors, 4D-STraG end-point error vs the zero-motion and mean-motion baselines (per motion type,
prompt-swap test), tearing at the input camera vs the true motion's, motion-VAE reconstruction error in metric
units, 4D-ViSM hole-region PSNR/SSIM vs the raw render and nearest-neighbour filling. `--data DIR` measures the
same on the first N readable TrajScene-60K samples in DIR (the released `<first>_<last>.tar.gz` archives or
folders extracted from them; indexed on first use). `--photos` adds the tearing table of scikit-image's photos
(`more4d.eval.photos`); with `--num-clips 0` it is the only measurement.
"""

from __future__ import annotations

import argparse

from more4d.weights.presets import PRESETS


def register(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", choices=sorted(PRESETS), help="model preset (default: tiny)")
    parser.add_argument("--weights", default=None, help="local weights folder (default: the preset's own)")
    parser.add_argument("--num-clips", type=int, default=32,
                        help="held-out clips to evaluate (default: 32; 0 with --photos: the photos only)")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="evaluate on TrajScene-60K samples in DIR (archives or extracted folders) instead of "
                             "synthetic seeds")
    parser.add_argument("--strict", action="store_true",
                        help="with --data: refuse unreadable samples instead of skipping and counting them")
    parser.add_argument("--photos", action="store_true",
                        help="also measure tearing and depth edges on scikit-image's photos (needs scikit-image)")
    parser.add_argument("--steps", type=int, default=None, help="STraG denoising steps (default: the preset's)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="STraG classifier-free guidance scale (default: the preset's; 1 = no guidance)")
    parser.add_argument("--vism-steps", type=int, default=10, help="ViSM denoising steps (default: 10)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    parser.add_argument("--out", default=None, help="write the full report (per-clip rows too) as JSON")
    parser.add_argument("--quiet", action="store_true", help="no per-clip progress lines")
    return parser


def run(args: argparse.Namespace) -> int:
    from more4d.eval.evaluate import evaluate, format_report, write_report
    from more4d.eval.photos import evaluate_photos, format_photo_report
    from more4d.io import check_output_path

    if args.out:
        check_output_path(args.out)
    report: dict = {}
    if args.num_clips or not args.photos:
        report = evaluate(args.model, args.weights, num_clips=args.num_clips, device=args.device,
                          num_inference_steps=args.steps, guidance_scale=args.guidance, vism_steps=args.vism_steps,
                          progress=not args.quiet, data_dir=args.data, strict=args.strict)
        print(format_report(report))
    if args.photos:
        report["photos"] = evaluate_photos(args.model, args.weights, device=args.device,
                                           num_inference_steps=args.steps, guidance_scale=args.guidance,
                                           progress=not args.quiet)
        print(format_photo_report(report["photos"]))
    if args.out:
        print(f"report: {write_report(report, args.out)}")
    return 0
