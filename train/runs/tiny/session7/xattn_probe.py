"""Where 4D-STraG's cross-attention looks: per block, |attn2 output| / |hidden| and the mean attention weight
(over heads and image tokens) on each caption token and on the padding, one validation clip, first denoising step.

    python train/runs/tiny/session7/xattn_probe.py WEIGHTS
"""

import sys

import torch

from more4d.data.synth import SynthConfig, generate_batch
from more4d.eval.evaluate import HELD_OUT_SEED_START
from more4d.pipelines.strag import STraGPipeline

pipe = STraGPipeline.from_preset("tiny", sys.argv[1], device="cpu")
pipe.set_progress_bar_config(disable=True)
records = []


def hook(attn, args, out):
    """Recompute the attention weights of one attn2 call (RMS-normed q/k, as the Wan processor does)."""
    h, text = args[0], args[1]
    q, k = attn.norm_q(attn.to_q(h)), attn.norm_k(attn.to_k(text))
    B, N, _ = q.shape
    q = q.view(B, N, attn.heads, -1).transpose(1, 2)
    k = k.view(B, k.shape[1], attn.heads, -1).transpose(1, 2)
    weights = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)  # (B, heads, N, L)
    records.append((weights.mean((1, 2))[0], float(out.norm(dim=-1).mean() / h.norm(dim=-1).mean())))


for block in pipe.transformer.blocks:
    block.attn2.register_forward_hook(hook)
clip = generate_batch([HELD_OUT_SEED_START - 1000 + 7], SynthConfig(novel_views=0), "cpu").clips()[0]
ids = pipe.tokenizer(clip.caption)["input_ids"]
print(clip.caption, ids)
with torch.no_grad():
    pipe(clip.frames[0].float() / 255, clip.caption, num_frames=17, num_inference_steps=1, guidance_scale=1.0, seed=0)
n = len(ids)
for i, (w, ratio) in enumerate(records):
    print(f"block {i}: |attn2 out|/|h| {ratio:.3f}; on caption tokens {[round(float(x), 3) for x in w[:n]]}, "
          f"on padding {float(w[n:].sum()):.3f}")
