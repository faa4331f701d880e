"""Contact sheet of ordinary photos through the whole pipeline: input | preview (input camera, three times) |
orbit render (two times) | final video (two times), one row per photo, with the measurements printed.

    python scripts/contact_sheet.py docs/photos_tiny.jpg                       # scikit-image's photos, tiny model
    python scripts/contact_sheet.py out.jpg --model moge4d --device cuda

The photos and captions are `more4d.eval.photos.PHOTOS`: scikit-image's astronaut, cat (chelsea), coffee, rocket and
Middlebury motorcycle (`pip install scikit-image`). Printed per photo: PSNR of the final frame 0 against the input,
of the covered pixels against the render, the brightness of the input and of the last frame, and the hole fraction
at the input camera over time (`more4d.eval.metrics.tearing`).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from more4d.eval.metrics import psnr, tearing
from more4d.eval.photos import PHOTOS, load_photo
from more4d.pipelines.more4d import MoRe4DPipeline

COLUMNS = ("input", "preview t=mid", "preview t=end", "orbit render mid", "orbit render end", "final mid",
           "final end")
ROW_HEIGHT = 192


def pooled_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """`metrics.psnr` over all pixels (of `mask`) of images `(..., H, W, 3)` pooled into one image."""
    W = a.shape[-2]
    return float(psnr(torch.from_numpy(a).reshape(-1, W, 3), torch.from_numpy(b).reshape(-1, W, 3),
                      None if mask is None else torch.from_numpy(mask).reshape(-1, W)))


def row_image(cells: list[np.ndarray]) -> Image.Image:
    tiles = [Image.fromarray((np.clip(c, 0, 1) * 255).astype(np.uint8)) for c in cells]
    tiles = [t.resize((round(t.width * ROW_HEIGHT / t.height), ROW_HEIGHT)) for t in tiles]
    row = Image.new("RGB", (sum(t.width for t in tiles), ROW_HEIGHT), "white")
    x = 0
    for t in tiles:
        row.paste(t, (x, 0))
        x += t.width
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the sheet (.png or .jpg)")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    pipe = MoRe4DPipeline.from_preset(args.model, args.weights, device=args.device)
    rows = []
    for name, prompt in PHOTOS.items():
        t0 = time.perf_counter()
        scene = pipe.generate(load_photo(name).image, prompt, seed=0)
        preview = pipe.render(scene, "static", render_only=True)
        orbit = pipe.render(scene, "orbit", seed=0)
        image = scene.colors.reshape(scene.height, scene.width, 3).numpy()
        final, render, hole = orbit.frames[0], orbit.render[0], orbit.mask[0]
        mid, end = scene.num_frames // 2, scene.num_frames - 1
        holes = tearing(scene)
        print(f"{name}: {time.perf_counter() - t0:.1f} s; final frame 0 vs input {pooled_psnr(final[0], image):.1f} dB; "
              f"covered pixels vs render {pooled_psnr(final, render, ~hole):.1f} dB; brightness input "
              f"{255 * image.mean():.0f}, last frame {255 * final[-1].mean():.0f}; holes at the input camera "
              f"t=mid {holes[mid]:.3f}, t=end {holes[end]:.3f}; orbit holes {hole.mean():.3f}", flush=True)
        rows.append(row_image([image, preview.render[0][mid], preview.render[0][end], render[mid], render[end],
                               final[mid], final[end]]))
    width = max(r.width for r in rows)
    header = 24
    sheet = Image.new("RGB", (width, header + ROW_HEIGHT * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    step = rows[0].width / len(COLUMNS)
    for i, title in enumerate(COLUMNS):
        draw.text((i * step + 4, 6), title, fill="black")
    for i, row in enumerate(rows):
        sheet.paste(row, (0, header + i * ROW_HEIGHT))
    sheet.save(args.out, quality=88) if args.out.endswith(".jpg") else sheet.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
