import sys
import time

import torch

sys.path.insert(0, "train")
from _lib.data import motion_targets

from more4d.data.synth import SynthConfig, generate_batch
from more4d.eval.metrics import track_epe
from more4d.geometry import denormalize_motion, video_to_motion
from more4d.weights import load_components

pre_steps = int(sys.argv[1])
steps = int(sys.argv[2])
lr = float(sys.argv[3])
torch.manual_seed(0)
mv = (
    load_components(
        "tiny", sys.argv[4] if len(sys.argv) > 4 else "train/outputs/mvw/C", only=("motion_vae",)
    )["motion_vae"]
    .float()
    .train()
    .requires_grad_(True)
)
mv.reset_adaptors(8.0)
if len(sys.argv) > 5:
    import tinit

    print(
        sys.argv[5],
        getattr(tinit, sys.argv[5])(mv.vae)
        if sys.argv[5] != "patch_no_rmsnorm"
        else tinit.patch_no_rmsnorm(),
    )
vae = mv.vae
cfg = SynthConfig(num_frames=9, height=32, width=32, novel_views=0)
val = generate_batch(range(999999000, 999999016), cfg, "cpu")
vm, vvis, vvalid, valphas = motion_targets(val)
vmov = vm.abs().amax(dim=(1, 2)) > 1e-4


from tinit import dense  # noqa: E402

gval = torch.Generator().manual_seed(1)
dval = dense(8, g=gval)
opt = torch.optim.Adam(mv.parameters(), lr=lr)


def ev():
    with torch.no_grad():
        r = mv.decode_motion(mv.encode_motion(vm)).float()
        pred = torch.stack(
            [denormalize_motion(video_to_motion(r[i]), val.points[i, 0], valphas[i]) for i in range(len(r))]
        )
        d = vae.decode(vae.encode(dval).latent_dist.mode()).sample
        return (
            float(track_epe(pred, val.points, vvis.flatten(2), vvalid & vmov.flatten(1)).nanmean()),
            float((d - dval)[:, :, 1:].abs().mean() / dval[:, :, 1:].abs().mean()),
            float((d - dval)[:, :, :1].abs().mean() / dval[:, :, :1].abs().mean()),
        )


t0 = time.time()
for s in range(pre_steps + steps + 1):
    if s < pre_steps:
        x = dense(4)
        loss = (vae.decode(vae.encode(x).latent_dist.mode()).sample - x).abs().mean()
    else:
        b = generate_batch(range(s * 4, s * 4 + 4), cfg, "cpu")
        m = motion_targets(b)[0]
        mov = (m.abs().amax(dim=(1, 2)) > 1e-4).float()[:, None, None]
        r = mv.decode_motion(mv.encode_motion(m)).float()
        loss = ((r - m).abs().mean(1, keepdim=True) * (1 + 15 * mov)).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if s % 100 == 0:
        e = ev()
        print(
            s,
            "pre" if s < pre_steps else "motion",
            f"moving epe {e[0]:.3f} (zero 0.656) dense rel {e[1]:.3f} f0 {e[2]:.3f} {time.time() - t0:.0f}s",
            flush=True,
        )
