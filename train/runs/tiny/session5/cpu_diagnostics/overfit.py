import sys
import time

import torch

sys.path.insert(0, "train")
from _lib.data import motion_targets

from more4d.data.synth import SynthConfig, generate_batch
from more4d.eval.metrics import track_epe
from more4d.geometry import denormalize_motion, video_to_motion
from more4d.weights import load_components

torch.manual_seed(0)
src = sys.argv[1]
lr = float(sys.argv[2])
steps = int(sys.argv[3])
gain = float(sys.argv[4])
mv = load_components("tiny", src, only=("motion_vae",))["motion_vae"].float().train().requires_grad_(True)
mv.reset_adaptors(gain)
b = generate_batch(
    [1000000000, 1000000002], SynthConfig(num_frames=9, height=64, width=64, novel_views=0), "cpu"
)
m, vis, valid, alphas = motion_targets(b)
mov = m.abs().amax(dim=(1, 2)) > 1e-4
opt = torch.optim.Adam(mv.parameters(), lr=lr)
t0 = time.time()
for s in range(steps + 1):
    r = mv.decode_motion(mv.encode_motion(m)).float()
    w = 1 + 15 * mov.float()[:, None, None]
    loss = ((r - m).abs() * w).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if s % 50 == 0:
        with torch.no_grad():
            rel = float(
                (r - m).abs().permute(1, 2, 0, 3, 4)[:, :, mov].mean()
                / m.abs().permute(1, 2, 0, 3, 4)[:, :, mov].mean()
            )
            pred = torch.stack(
                [denormalize_motion(video_to_motion(r[i]), b.points[i, 0], alphas[i]) for i in range(2)]
            )
            epe = float(track_epe(pred, b.points, vis.flatten(2), valid & mov.flatten(1)).nanmean())
            zero = float(
                track_epe(
                    b.points[:, :1].expand_as(b.points), b.points, vis.flatten(2), valid & mov.flatten(1)
                ).nanmean()
            )
        print(
            s,
            f"loss {float(loss):.4f} rel {rel:.3f} moving epe {epe:.3f} (zero {zero:.3f}) {time.time() - t0:.0f}s",
            flush=True,
        )
