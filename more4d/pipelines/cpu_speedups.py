"""CPU inference speed-ups that leave results unchanged (up to float rounding).

PyTorch picks its slow im2col `slow_conv3d` kernel instead of oneDNN for batch-1 float32 Conv3d whenever
N*C*D*H <= 20480 (a heuristic written for 4D inputs), which is every small-channel layer of a tiny Wan VAE:
there oneDNN is 5-8x faster. `use_onednn_conv3d(model)` routes those convolutions to oneDNN.
"""

from __future__ import annotations

import types

import torch
from torch import nn


def _onednn_conv_forward(self: nn.Conv3d, input: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor | None) -> torch.Tensor:
    if (input.device.type == "cpu" and input.dtype == torch.float32 and weight.dtype == torch.float32
            and not torch.is_grad_enabled() and self.padding_mode == "zeros" and not isinstance(self.padding, str)):
        return torch.ops.aten.mkldnn_convolution(input.contiguous(), weight.contiguous(), bias, self.padding,
                                                 self.stride, self.dilation, self.groups)
    return nn.Conv3d._conv_forward(self, input, weight, bias)


def use_onednn_conv3d(model: nn.Module) -> int:
    """Route the float32 CPU inference Conv3d layers of `model` to oneDNN; returns how many were patched.

    No effect on CUDA, on other dtypes, or when gradients are enabled (training keeps PyTorch's choice).
    """
    if not torch.backends.mkldnn.is_available():
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            module._conv_forward = types.MethodType(_onednn_conv_forward, module)
            count += 1
    return count
