import sys

import torch

sys.path.insert(0, "train")
from _lib.data import motion_targets

from more4d.data.synth import SynthConfig, generate_batch
from more4d.eval.metrics import track_epe
from more4d.geometry import denormalize_motion, video_to_motion
from more4d.models.motion_vae import MotionDecoderAdaptor, MotionEncoderAdaptor

cfg = SynthConfig(num_frames=9, height=32, width=32, novel_views=0)
val = generate_batch(range(999999000, 999999016), cfg, "cpu")
vm, vvis, vvalid, valphas = motion_targets(val)
vmov = vm.abs().amax(dim=(1, 2)) > 1e-4


def epe(r):
    pred = torch.stack(
        [denormalize_motion(video_to_motion(r[i]), val.points[i, 0], valphas[i]) for i in range(len(r))]
    )
    return float(track_epe(pred, val.points, vvis.flatten(2), vvalid & vmov.flatten(1)).nanmean())


enc, dec = MotionEncoderAdaptor(16, 4, 1, 8.0), MotionDecoderAdaptor(16, 4, 1, True, 8.0)
with torch.no_grad():
    print("zero", epe(torch.zeros_like(vm)))
    print("identity VAE", epe(dec(enc(vm))))
    hold = vm.clone()
    for t in range(1, 9):
        hold[:, :, t] = vm[:, :, 4 * ((t + 3) // 4)]
    print("sample-and-hold", epe(hold))
    print("half", epe(vm * 0.5))
    print(
        "moving frac",
        float(vmov.float().mean()),
        "visible frac on moving",
        float(vvis.flatten(2).float().mean()),
    )
