"""Which motion axes does the tiny motion VAE keep? Per channel (x, y, depth) of the motion video, on the moving
tracks of a few training-distribution clips: the encoder adaptor's pseudo-RGB, its reconstruction by the Wan VAE
inside, and the decoded motion; and the Wan VAE alone on a dense random video (no adaptors).

    python train/runs/tiny/session7/vae_axes_probe.py [WEIGHTS]
"""

import sys

import torch

sys.path.insert(0, "train")
from _lib.data import motion_targets  # noqa: E402
from train_vae import dense_videos  # noqa: E402

from more4d.data.synth import SynthConfig, generate_batch  # noqa: E402
from more4d.pipelines.strag import STraGPipeline  # noqa: E402

mvae = STraGPipeline.from_preset("tiny", sys.argv[1] if len(sys.argv) > 1 else None, device="cpu").motion_vae


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


with torch.no_grad():
    for seed in (3, 5, 11):
        batch = generate_batch([seed], SynthConfig(height=128, width=128, novel_views=0), "cpu")
        m = motion_targets(batch)[0]
        moving = m.abs().amax(dim=(1, 2))[0] > 1e-4
        pseudo = mvae.encoder_adaptor(m)
        pseudo_rec = mvae.decode_video(mvae.encode_video(pseudo))
        m_rec = mvae.decode_motion(mvae.encode_motion(m))
        print(f"seed {seed}: {batch.captions[0]}")
        for c, axis in enumerate("xyz"):
            t, r = m[0, c][:, moving], m_rec[0, c][:, moving]
            print(f"  {axis}: |m| {float(t.abs().mean()):.4f} -> decoded |m| {float(r.abs().mean()):.4f} "
                  f"(corr {corr(t, r):+.3f}); pseudo-RGB |v| {float(pseudo[0, c][:, moving].abs().mean()):.3f} -> "
                  f"VAE |v| {float(pseudo_rec[0, c][:, moving].abs().mean()):.3f} "
                  f"(corr {corr(pseudo[0, c][:, moving], pseudo_rec[0, c][:, moving]):+.3f})")
    dense = dense_videos(1, (17, 128, 128), 0, torch.device("cpu"))
    dense_rec = mvae.decode_video(mvae.encode_video(dense))
    print("dense random video through the Wan VAE alone, corr per channel:",
          [round(corr(dense[0, c], dense_rec[0, c]), 3) for c in range(3)])
