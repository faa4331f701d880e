"""Where a module computes, also under accelerate's CPU offload (whose parameters live on the meta device)."""

from __future__ import annotations

import torch


def execution_device(module: torch.nn.Module) -> torch.device:
    """The device `module` runs on: its offload hook's execution device if it has one, else its parameters'.

    With sequential CPU offload the parameters sit on the meta device between calls, so inputs must be moved to
    the hook's execution device instead (diffusers' pipelines do the same in `_execution_device`).
    """
    for sub in module.modules():
        device = getattr(getattr(sub, "_hf_hook", None), "execution_device", None)
        if device is not None:
            return torch.device(device)
    return next(module.parameters()).device
