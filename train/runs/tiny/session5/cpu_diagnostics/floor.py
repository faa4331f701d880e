"""Reference errors on the 9x32x32 validation set (REPORT "Session 5", finding 2): zero motion, identity adaptors,
a sample-and-hold of every 4th frame, half amplitude."""

import torch
from common import track_errors, validation_set

from more4d.models.motion_vae import MotionDecoderAdaptor, MotionEncoderAdaptor

vs = validation_set()
vm = vs.m
enc, dec = MotionEncoderAdaptor(16, 4, 1, 8.0), MotionDecoderAdaptor(16, 4, 1, True, 8.0)
with torch.no_grad():
    print("zero", track_errors(torch.zeros_like(vm), vs)[0])
    print("identity VAE", track_errors(dec(enc(vm)), vs)[0])
    hold = vm.clone()
    for t in range(1, 9):
        hold[:, :, t] = vm[:, :, 4 * ((t + 3) // 4)]
    print("sample-and-hold", track_errors(hold, vs)[0])
    print("half", track_errors(vm * 0.5, vs)[0])
    print(
        "moving frac",
        float(vs.moving.float().mean()),
        "visible frac on moving",
        float(vs.vis.flatten(2).float().mean()),
    )
