import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan

from more4d.models.strag import TINY_VAE_CONFIG

torch.manual_seed(0)
vae = AutoencoderKLWan(**TINY_VAE_CONFIG)


def dense(B, T=9, H=32, W=32):
    low = torch.rand(B, 3, T, 4, 4) * 1.6 - 0.8
    return F.interpolate(low, size=(T, H, W), mode="trilinear", align_corners=True)


x = dense(4)
z = vae.encode(x).latent_dist.mode()
r = vae.decode(z).sample
print("latent std over batch", float(z.std(0).mean()), "latent |mean|", float(z.abs().mean()))
print("output std over batch", float(r.std(0).mean()), "output |mean|", float(r.abs().mean()))
loss = (r - x).abs().mean()
loss.backward()
for n, p in vae.named_parameters():
    if (
        p.grad is not None
        and ("conv" in n and "weight" in n)
        and any(
            k in n
            for k in (
                "encoder.conv_in",
                "encoder.down_blocks.0",
                "encoder.mid",
                "encoder.conv_out",
                "quant_conv",
                "decoder.conv_in",
                "decoder.mid",
                "decoder.conv_out",
            )
        )
    ):
        print(f"{n:60s} grad {float(p.grad.norm()):.2e} w {float(p.norm()):.2e}")
