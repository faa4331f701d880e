import sys

import torch

sys.path.insert(0, "train")
from _lib.data import motion_targets

from more4d.data.synth import SynthConfig, generate_batch
from more4d.geometry import denormalize_motion, video_to_motion
from more4d.weights import load_components

mv = load_components("tiny", sys.argv[1], only=("motion_vae",))["motion_vae"].float().eval()
seeds = range(999999000, 999999004)
b = generate_batch(seeds, SynthConfig(num_frames=17, height=128, width=128, novel_views=0), "cpu")
m, vis, valid, alphas = motion_targets(b)
with torch.no_grad():
    r = mv.decode_motion(mv.encode_motion(m)).float()
for i, c in enumerate(b.clips()):
    print(c.caption)
    mov = m[i].abs().amax(dim=(0, 1)) > 1e-4
    for t in (4, 8, 16):
        gm = m[i, :, t][:, mov]
        rm = r[i, :, t][:, mov]
        print(
            f"  t={t} |m| {float(gm.abs().mean()):.3f} |recon| {float(rm.abs().mean()):.3f} |err| {float((gm - rm).abs().mean()):.3f} corr {float(torch.nn.functional.cosine_similarity(gm.flatten(), rm.flatten(), dim=0)):.2f} static |recon| {float(r[i, :, t][:, ~mov].abs().mean()):.4f}"
        )
    gp = b.points[i]
    pred = denormalize_motion(video_to_motion(r[i]), gp[0], alphas[i])
    d = (pred - gp).norm(dim=-1)[:, mov.flatten()]
    print(
        "  moving EPE per t",
        [round(float(x), 2) for x in d.mean(1)[::4]],
        "GT disp",
        [round(float(x), 2) for x in (gp[:, mov.flatten()] - gp[0, mov.flatten()]).norm(dim=-1).mean(1)[::4]],
    )
