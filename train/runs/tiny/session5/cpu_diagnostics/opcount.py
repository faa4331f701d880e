import sys

sys.path.insert(0, "train")
from _lib.data import motion_targets
from torch.profiler import ProfilerActivity, profile

from more4d.data.synth import SynthConfig, generate_batch
from more4d.weights import load_components

mv = (
    load_components("tiny", "train/outputs/mvw/C", only=("motion_vae",))["motion_vae"]
    .float()
    .train()
    .requires_grad_(True)
)
b = generate_batch([0, 1], SynthConfig(num_frames=17, height=64, width=64, novel_views=0), "cpu")
m = motion_targets(b)[0]
mv.decode_motion(mv.encode_motion(m)).abs().mean().backward()
with profile(activities=[ProfilerActivity.CPU]) as prof:
    mv.decode_motion(mv.encode_motion(m)).abs().mean().backward()
ev = prof.events()
top = [e for e in ev if e.name.startswith("aten::") and e.cpu_parent is None]
print("aten ops (top-level) per fwd+bwd step:", len(top), " all events:", len(ev))
print("conv calls:", sum(1 for e in ev if e.name in ("aten::convolution",)))
