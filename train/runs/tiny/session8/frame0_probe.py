"""Where does the shipped tiny motion VAE lose x and y? Its Wan VAE alone (no adaptors) and the RGB `vae/` on dense
random videos: a moving one, the same frame held still, and zero-then-constant; per-channel correlation of input and
reconstruction at frame 0 and over frames 1..; then a linear probe (least squares, with bias) of the motion VAE's
latents for each input channel of single dense frames.

    python train/runs/tiny/session8/frame0_probe.py
"""

import sys

import torch
from diffusers import AutoencoderKLWan

sys.path.insert(0, "train")
from train_vae import dense_videos  # noqa: E402

from more4d.pipelines.strag import STraGPipeline  # noqa: E402

mvae = STraGPipeline.from_preset("tiny", device="cpu").motion_vae
rgb = AutoencoderKLWan.from_pretrained("assets/weights/tiny/vae")


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def round_trip(vae, x: torch.Tensor) -> torch.Tensor:
    if vae is mvae:
        return mvae.decode_video(mvae.encode_video(x))
    return vae.decode(vae.encode(x).latent_dist.mode()).sample


with torch.no_grad():
    d = dense_videos(1, (17, 64, 64), 0, torch.device("cpu"))
    still = d[:, :, :1].expand(-1, -1, 17, -1, -1).contiguous()
    step = torch.zeros_like(d)
    step[:, :, 1:] = d[:, :, 1:2]
    for name, vae in (("motion VAE's Wan VAE", mvae), ("RGB vae/", rgb)):
        for tag, x in (("moving", d), ("still", still), ("zero-then-constant", step)):
            r = round_trip(vae, x)
            f0 = [round(corr(x[0, c, 0], r[0, c, 0]), 3) for c in range(3)] if tag != "zero-then-constant" else "-"
            print(f"{name}, {tag}: frame 0 {f0}, frames 1.. {[round(corr(x[0, c, 1:], r[0, c, 1:]), 3) for c in range(3)]}")
    frames = dense_videos(4, (1, 64, 64), 0, torch.device("cpu"))
    target = torch.nn.functional.interpolate(frames[:, :, 0], size=(8, 8), mode="area")  # one value per latent pixel
    z = mvae.vae.encode(frames).latent_dist.mode()[:, :, 0]
    X = torch.cat([z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), torch.ones(z.numel() // z.shape[1], 1)], 1)
    for c in range(3):
        y = target[:, c].reshape(-1, 1)
        fit = X @ torch.linalg.lstsq(X, y).solution
        print(f"linear probe of the motion VAE's latents, channel {'xyz'[c]}: R^2 {float(1 - (fit - y).var() / y.var()):.3f}")
