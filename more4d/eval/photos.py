"""Tearing on real photos (`more4d eval --photos`): scikit-image's sample photos through the preset's 4D-STraG,
each with a caption that asks for motion.

Per photo: the share of pixels that move (more than `MOVING_PX` in the image by the last frame), their mean image
motion and whether it goes the caption's way (its direction word dominates the motion); the holes at the input
camera in the last frame and over all frames (`tearing`), the pixels torn from their own surface in the last frame
(`surface_tears`), and the share of pixels on a depth discontinuity
(`depth_discontinuities`); no ground truth is needed. Middlebury's motorcycle ships with a ground-truth disparity
map: for it also the iBims-1 depth-boundary errors of the predicted depth, and a second run on the true depth,
which tells what the depth contributes to the tearing.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from more4d.data.photo_textures import skimage_data_dir
from more4d.errors import InputError
from more4d.eval.metrics import (
    MOVING_PX,
    depth_discontinuities,
    depth_edge_errors,
    fill_invalid_far,
    image_displacement,
    mean_image_motion,
    surface_tears,
    tearing,
)
from more4d.geometry import DIRECTION_AXES

if TYPE_CHECKING:
    from more4d.scene import Scene4D

# Captions in the words the embedded model learned ("the <thing> <motion>"; see SynthConfig.unnamed_prob): the
# tiny model moves the object that stands out, it cannot wave a hand or raise steam.
PHOTOS = {"astronaut": "the astronaut moves left", "chelsea": "the cat moves right", "coffee": "the cup moves left",
          "rocket": "the rocket moves up", "motorcycle_left": "the motorcycle moves right"}
# Middlebury 2014 calibration of scikit-image's quarter-size motorcycle pair (`skimage.data.stereo_motorcycle`):
# depth = focal * baseline / (disparity + doffs)
MOTORCYCLE_FOCAL_PX, MOTORCYCLE_CENTRE_PX = 994.978, (311.193, 254.877)
MOTORCYCLE_BASELINE_M, MOTORCYCLE_DOFFS_PX = 0.193001, 31.086


@dataclass
class Photo:
    """A sample photo, its caption, and where known its true metric depth `(H, W)` (no invalid pixel) and K."""

    name: str
    prompt: str
    image: np.ndarray
    depth: np.ndarray | None = None
    K: torch.Tensor | None = None


def load_photo(name: str) -> Photo:
    """One photo of `PHOTOS` with its caption; the motorcycle with its ground-truth depth and camera."""
    from PIL import Image

    folder = skimage_data_dir()
    if name not in PHOTOS:
        raise InputError(f"unknown photo {name!r}; choose one of {', '.join(PHOTOS)}")
    if name != "motorcycle_left":
        import skimage.data

        return Photo(name, PHOTOS[name], getattr(skimage.data, name)())
    image = np.asarray(Image.open(folder / "motorcycle_left.png").convert("RGB"))
    disparity = np.load(folder / "motorcycle_disp.npz")["arr_0"].astype(np.float64)
    valid = np.isfinite(disparity) & (disparity + MOTORCYCLE_DOFFS_PX > 0)  # unknown pixels are inf in the file
    depth = MOTORCYCLE_FOCAL_PX * MOTORCYCLE_BASELINE_M / np.where(valid, disparity + MOTORCYCLE_DOFFS_PX, 1.0)
    K = torch.tensor([[MOTORCYCLE_FOCAL_PX, 0.0, MOTORCYCLE_CENTRE_PX[0]],
                      [0.0, MOTORCYCLE_FOCAL_PX, MOTORCYCLE_CENTRE_PX[1]], [0.0, 0.0, 1.0]])
    return Photo(name, PHOTOS[name], image, fill_invalid_far(depth, valid), K)


def photo_row(photo: Photo, scene: Scene4D, depth_source: str) -> dict[str, Any]:
    """The measurements of one scene generated from `photo` (see the module docstring)."""
    from more4d.pipelines.strag import crop_resize

    tear, torn = tearing(scene), surface_tears(scene)
    moving = image_displacement(scene.points, scene.K).norm(dim=-1) > MOVING_PX
    motion = mean_image_motion(scene.points, scene.K, moving)
    word = next(w for w in photo.prompt.split() if w in DIRECTION_AXES)
    axis, sign = DIRECTION_AXES[word]
    row = {"photo": photo.name, "prompt": photo.prompt, "depth": depth_source, "tearing": tear.tolist(),
           "tearing_last": float(tear[-1]), "tearing_mean": float(tear.mean()), "torn_last": float(torn[-1]),
           "moving": float(moving.float().mean()), "motion_px": motion.tolist(),
           "follows": bool(sign * motion[axis] > motion[1 - axis].abs()),
           "discontinuity": float(depth_discontinuities(scene).float().mean()), "edge_acc": math.nan,
           "edge_comp": math.nan}
    if photo.depth is not None:  # the true depth cropped and resized as the pipeline fitted the photo
        truth = crop_resize(torch.from_numpy(photo.depth).float(), scene.metadata["crop"], scene.image_size,
                            mode="nearest")
        edges = depth_edge_errors(scene.depth0.cpu(), truth)
        row["edge_acc"], row["edge_comp"] = edges["acc"], edges["comp"]
    return row


@torch.no_grad()
def evaluate_photos(model: str = "tiny", weights_dir: str | os.PathLike | None = None,
                    device: str | torch.device | None = None, num_inference_steps: int | None = None,
                    guidance_scale: float | None = None, num_frames: int | None = None,
                    names: Sequence[str] = tuple(PHOTOS), progress: bool = True) -> dict[str, Any]:
    """Generate a scene (seed 0) from each photo `names` of `PHOTOS` with its caption and measure it; the report
    dict."""
    from more4d.depth import GivenDepth
    from more4d.pipelines.strag import STraGPipeline
    from more4d.weights import resolve_device

    photos = [load_photo(name) for name in names]  # before loading models: a missing scikit-image fails fast
    dev = resolve_device(device)
    t0 = time.monotonic()
    strag = STraGPipeline.from_preset(model, weights_dir, device=dev)
    strag.set_progress_bar_config(disable=True)
    settings = {"num_frames": num_frames or strag.defaults["num_frames"],
                "num_inference_steps": num_inference_steps or strag.defaults["num_inference_steps"],
                "guidance_scale": strag.defaults["guidance_scale"] if guidance_scale is None else guidance_scale}
    rows = []
    for photo in photos:
        runs = [("predicted", None)]
        if photo.depth is not None:
            runs.append(("ground truth", GivenDepth(photo.depth, photo.K)))
        for source, depth in runs:
            t = time.monotonic()
            scene = strag(photo.image, photo.prompt, seed=0, depth=depth, **settings)
            rows.append(photo_row(photo, scene, source))
            rows[-1]["seconds"] = round(time.monotonic() - t, 1)
            if progress:
                r = rows[-1]
                print(f"{photo.name} ({source} depth): tearing last {r['tearing_last']:.3f} mean "
                      f"{r['tearing_mean']:.3f}, {r['seconds']} s", flush=True)
    return {"model": model, "device": str(dev), "seconds": round(time.monotonic() - t0, 1), "sampler": settings,
            "photos": rows}


def format_photo_report(report: dict[str, Any]) -> str:
    """The photo table `more4d eval --photos` prints."""
    s = report["sampler"]

    def px(v: float) -> str:
        return f"{v:.2f}" if math.isfinite(v) else "-"

    lines = [f"more4d eval --photos: model {report['model']}, {report['device']}, {report['seconds']} s; "
             f"{s['num_frames']} frames, {s['num_inference_steps']} steps, guidance {s['guidance_scale']:g}, seed 0",
             f"moving: pixels shifted > {MOVING_PX:g} px by the last frame, their mean shift (px) and whether it goes the "
             "caption's way; tearing: holes at the input camera; torn: pixels pulled from a neighbour on their own "
             "surface, last frame; discontinuity: pixels the renderer opens on a depth edge; depth edges (iBims-1, px) "
             "against the true depth",
             f"{'photo':<16} {'depth':<13} {'moving':>7} {'shift dx, dy':>13} {'caption':>8} {'tearing last':>12} "
             f"{'mean':>7} {'torn':>6} {'discontinuity':>13} {'edge acc':>8} {'comp':>6}"]
    lines += [f"{r['photo']:<16} {r['depth']:<13} {100 * r['moving']:>6.1f}% "
              f"{r['motion_px'][0]:>+6.1f},{r['motion_px'][1]:>+6.1f} {'follows' if r['follows'] else 'misses':>8} "
              f"{100 * r['tearing_last']:>11.1f}% {100 * r['tearing_mean']:>6.1f}% {100 * r['torn_last']:>5.1f}% "
              f"{100 * r['discontinuity']:>12.1f}% {px(r['edge_acc']):>8} {px(r['edge_comp']):>6}"
              for r in report["photos"]]
    return "\n".join(lines)
