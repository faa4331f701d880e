"""How well the motion VAE and the RGB `vae/` reconstruct RGB frames of two held-out clips (what 4D-STraG's image
condition can keep): PSNR and per-channel correlation of frame 0.

    python train/runs/tiny/session10/rgb.py
"""

import torch

from more4d.data.synth import SynthConfig, generate_batch
from more4d.models.motion_vae import wan_decode, wan_encode
from more4d.weights import load_components

comps = load_components("tiny", None, device="cpu", only=("motion_vae", "vae"))
batch = generate_batch([1000000000, 1000000007], SynthConfig(num_frames=5, height=256, width=256, novel_views=0))
image = batch.frames[:, 0].float() / 255 * 2 - 1
video = image.permute(0, 3, 1, 2)[:, :, None].expand(-1, -1, 5, -1, -1)
for name, vae in (("motion_vae", comps["motion_vae"].vae), ("vae", comps["vae"])):
    with torch.no_grad():
        recon = wan_decode(vae, wan_encode(vae, video))
    mse = (recon[:, :, 0] - video[:, :, 0]).pow(2).mean()
    corr = [float(torch.corrcoef(torch.stack([recon[:, c, 0].flatten(), video[:, c, 0].flatten()]))[0, 1])
            for c in range(3)]
    print(name, f"PSNR {float(10 * torch.log10(4 / mse)):.1f} dB", "per-channel correlation",
          [round(c, 3) for c in corr])
