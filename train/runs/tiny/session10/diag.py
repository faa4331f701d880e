"""Where 4D-STraG's motion error comes from, on held-out clips: the motion (displacement) EPE over all, static and
moving tracks, for one sample, each of several seeds and their mean, zero motion and the motion VAE's round trip.

    python train/runs/tiny/session10/diag.py NUM_CLIPS NUM_SEEDS [WEIGHTS_DIR]

Each row is [all, static, moving] tracks in metres.
"""

import json
import sys

import numpy as np
import torch

from more4d.data.synth import SynthConfig, generate_batch
from more4d.eval.evaluate import HELD_OUT_SEED_START
from more4d.eval.metrics import displacement_epe
from more4d.geometry import (
    denormalize_motion,
    motion_alphas,
    motion_to_video,
    normalize_motion,
    video_to_motion,
)
from more4d.pipelines.strag import STraGPipeline


def split_epe(tracks: torch.Tensor, gt: torch.Tensor, vis: torch.Tensor, ok: torch.Tensor,
              moving: torch.Tensor) -> list[float]:
    return [float(displacement_epe(tracks, gt, vis, sel)) for sel in (ok, ok & ~moving, ok & moving)]


def main() -> None:
    num_clips, num_seeds = int(sys.argv[1]), int(sys.argv[2])
    strag = STraGPipeline.from_preset("tiny", sys.argv[3] if len(sys.argv) > 3 else None, device="cpu")
    strag.set_progress_bar_config(disable=True)
    (H, W), T = strag.resolution, strag.defaults["num_frames"]
    config = SynthConfig(num_frames=T, height=H, width=W, novel_views=0)
    rows = []
    for i in range(num_clips):
        clip = generate_batch([HELD_OUT_SEED_START + i], config).clips()[0]
        gt, vis = clip.points.float(), clip.visibility
        alphas = motion_alphas(clip.K.float(), (H, W))
        m, ok = normalize_motion(gt, alphas)
        moving = ((gt - gt[:1]).norm(dim=-1) > 1e-3).any(0)
        scenes = [strag(clip.frames[0].float() / 255.0, clip.caption, num_frames=T, seed=s) for s in range(num_seeds)]
        with torch.no_grad():
            recon = strag.motion_vae.decode_motion(strag.motion_vae.encode_motion(motion_to_video(m, H, W)[None]))
        vae_tracks = denormalize_motion(video_to_motion(recon[0].float()), gt[0], alphas)
        row = {"seed": i, "caption": clip.caption, "moving_frac": float(moving[ok].float().mean()),
               "zero": split_epe(scenes[0].points[:1].expand_as(gt), gt, vis, ok, moving),
               "s0": split_epe(scenes[0].points, gt, vis, ok, moving),
               "sall": [split_epe(s.points, gt, vis, ok, moving) for s in scenes],
               "ens": split_epe(torch.stack([s.points for s in scenes]).mean(0), gt, vis, ok, moving),
               "vae": split_epe(vae_tracks, gt, vis, ok, moving)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    for key in ("zero", "s0", "ens", "vae"):
        print(key, np.array([r[key] for r in rows]).mean(0).round(4).tolist())
    print("per-seed mean", np.array([r["sall"] for r in rows]).mean((0, 1)).round(4).tolist())


if __name__ == "__main__":
    main()
