"""Flow-matching pieces shared by train_strag.py and train_vism.py (rectified flow, velocity target)."""

from __future__ import annotations

import torch

from more4d.pipelines.schedulers import NUM_TRAIN_TIMESTEPS


def sample_sigmas(n: int, sampling: str, shift: float, gen: torch.Generator) -> torch.Tensor:
    """Noise levels `(n,)` in (0, 1): u uniform or logit-normal, then the shift map s = k u / (1 + (k - 1) u).

    With shift 5 this is the continuous form of FlowMatchEulerDiscreteScheduler(shift=5)'s sigma grid.
    """
    u = torch.rand(n, generator=gen) if sampling == "uniform" else torch.randn(n, generator=gen).sigmoid()
    u = u.clamp(1e-4, 1 - 1e-4)
    return shift * u / (1 + (shift - 1) * u)


def flow_matching_loss(model_fn, latents: torch.Tensor, cond: torch.Tensor, sampling: str, shift: float,
                       gen: torch.Generator, weight: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between `model_fn(cat[x_t, cond], 1000 s)` and the velocity noise - x_0, x_t = (1 - s) x_0 + s noise.

    latents `(B, 16, F, h, w)` float32; cond `(B, C, F, h, w)` concatenated on channels; `weight` (broadcastable
    to the latents) makes it a weighted mean.
    """
    B = latents.shape[0]
    sigmas = sample_sigmas(B, sampling, shift, gen).to(latents.device)
    noise = torch.randn(latents.shape, generator=gen).to(latents.device)
    s = sigmas.view(B, 1, 1, 1, 1)
    x = torch.cat([(1 - s) * latents + s * noise, cond.to(latents.dtype)], dim=1)
    pred = model_fn(x, sigmas * NUM_TRAIN_TIMESTEPS)
    err = (pred.float() - (noise - latents)).pow(2)
    if weight is None:
        return err.mean()
    weight = weight.to(err.dtype).expand_as(err)
    return (err * weight).sum() / weight.sum()
