import sys
import time

import torch

sys.path.insert(0, "train")
from _lib.data import motion_targets

from more4d.data.synth import SynthConfig, generate_batch
from more4d.eval.metrics import track_epe
from more4d.geometry import denormalize_motion, video_to_motion
from more4d.weights import load_components

kind = sys.argv[1]
steps = int(sys.argv[2])
src = sys.argv[3]
lr = float(sys.argv[4])
torch.manual_seed(0)
mv = load_components("tiny", src, only=("motion_vae",))["motion_vae"].float().train().requires_grad_(True)
mv.reset_adaptors(8.0)
if len(sys.argv) > 5:
    from tinit import init_temporal_identity

    print("tinit", init_temporal_identity(mv.vae))
cfg = SynthConfig(num_frames=9, height=32, width=32, novel_views=0)
val = generate_batch(range(999999000, 999999016), cfg, "cpu")
vm, vvis, vvalid, valphas = motion_targets(val)
vmov = vm.abs().amax(dim=(1, 2)) > 1e-4
opt = torch.optim.Adam(mv.parameters(), lr=lr)


def evaluate():
    with torch.no_grad():
        r = mv.decode_motion(mv.encode_motion(vm)).float()
        pred = torch.stack(
            [denormalize_motion(video_to_motion(r[i]), val.points[i, 0], valphas[i]) for i in range(len(r))]
        )
        return float(track_epe(pred, val.points, vvis.flatten(2), vvalid & vmov.flatten(1)).nanmean()), float(
            track_epe(pred, val.points, vvis.flatten(2), vvalid & ~vmov.flatten(1)).nanmean()
        )


t0 = time.time()
for s in range(steps + 1):
    b = generate_batch(range(s * 4, s * 4 + 4), cfg, "cpu")
    m = motion_targets(b)[0]
    mov = (m.abs().amax(dim=(1, 2)) > 1e-4).float()[:, None, None]
    r = mv.decode_motion(mv.encode_motion(m)).float()
    w = 1 + 15 * mov
    d = r - m
    if kind == "l1":
        per = d.abs().mean(1, keepdim=True)
    elif kind == "l2":
        per = d.pow(2).mean(1, keepdim=True)
    elif kind == "epe":
        per = (d.pow(2).sum(1, keepdim=True) + 1e-6).sqrt()
    loss = (per * w).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if s % 100 == 0:
        e = evaluate()
        print(kind, s, f"moving {e[0]:.3f} static {e[1]:.4f} {time.time() - t0:.0f}s", flush=True)
