"""The embedded default depth model: a small UNet predicting log metric depth from RGB (about 1M params)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from more4d.depth.base import DepthPrediction
from more4d.depth.edges import sharpen_depth_edges
from more4d.geometry import DEFAULT_FOV_DEG, intrinsics_from_fov
from more4d.models.placement import execution_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(rgb: torch.Tensor) -> torch.Tensor:
    """Normalise `(B, 3, H, W)` RGB in [0, 1] with the ImageNet mean/std."""
    mean = rgb.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = rgb.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (rgb - mean) / std


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class TinyDepthNet(ModelMixin, ConfigMixin):
    """UNet: RGB `(B, 3, H, W)` in [0, 1] -> log metric depth `(B, 1, H, W)`; H, W multiples of 2**(levels-1).

    Args:
        block_channels: channels per resolution level (the first level is full resolution).
        sample_size: the side of the square working resolution (the estimator keeps the aspect at this area).
        log_depth_offset: added to the head's output (log metres), so an untrained net predicts about exp(offset).
    """

    @register_to_config
    def __init__(self, block_channels: tuple[int, ...] = (24, 48, 96, 160), norm_groups: int = 8,
                 sample_size: int = 128, log_depth_offset: float = math.log(4.0)) -> None:
        super().__init__()
        chans = list(block_channels)
        self.conv_in = nn.Conv2d(3, chans[0], 3, padding=1)
        self.down = nn.ModuleList()
        for i, c in enumerate(chans):
            prev = chans[max(i - 1, 0)]
            self.down.append(nn.ModuleDict({
                "pool": nn.Conv2d(prev, prev, 3, stride=2, padding=1) if i else nn.Identity(),
                "block": _ResBlock(prev, c, norm_groups),
            }))
        self.up = nn.ModuleList()
        for i in reversed(range(len(chans) - 1)):
            self.up.append(_ResBlock(chans[i + 1] + chans[i], chans[i], norm_groups))
        self.norm_out = nn.GroupNorm(norm_groups, chans[0])
        self.conv_out = nn.Conv2d(chans[0], 1, 3, padding=1)

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.config.block_channels) - 1)

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """The input size for an `(height, width)` image: area ~ sample_size**2 (never upsampled), aspect kept,
        sides multiples of the net's stride."""
        m, side = self.multiple, self.config.sample_size
        scale = min(1.0, side / math.sqrt(height * width))
        return max(m, round(height * scale / m) * m), max(m, round(width * scale / m) * m)

    def predict(self, rgb: torch.Tensor, flip: bool = False) -> torch.Tensor:
        """RGB `(B, 3, H, W)` in [0, 1], any size -> log depth `(B, H, W)`: run at `working_size`, upsampled back;
        with `flip`, the mean of the image's and its mirror image's (mirrored back)."""
        H, W = rgb.shape[-2:]
        x = F.interpolate(rgb, size=self.working_size(H, W), mode="bilinear", antialias=True, align_corners=False)
        if flip:
            x = torch.cat([x, x.flip(-1)])
        out = F.interpolate(self(x).float(), size=(H, W), mode="bilinear", align_corners=False)[:, 0]
        return (out[: len(rgb)] + out[len(rgb):].flip(-1)) / 2 if flip else out

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(imagenet_normalize(rgb))
        skips = []
        for level in self.down:
            h = level["block"](level["pool"](h))
            skips.append(h)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1))
        return self.conv_out(F.silu(self.norm_out(h))) + self.config.log_depth_offset


class TinyDepthEstimator(ModelMixin, ConfigMixin):
    """`DepthEstimator` around `TinyDepthNet`: resizes to the net's working area, returns depth + K.

    A diffusers model (`save_pretrained` / `from_pretrained`), so pipelines save and load it as a component. K comes
    from `fov_deg` (vertical FOV; the net predicts no camera). Depth is clamped to `[min_depth, max_depth]`. With
    `test_time_flip` the log depth is the mean of the image's and its mirror image's: on photos, which the net never
    saw, part of what it reads into texture differs between the two and cancels (10-25% fewer depth-discontinuity
    pixels on the evaluation photos; a second, smaller scale would cancel more but biases metric depth). With
    `edge_median_radius` > 0 the ramps the net draws across outlines become steps at the image's edges
    (`sharpen_depth_edges`).

    >>> est = TinyDepthEstimator.from_net(TinyDepthNet.from_pretrained("assets/weights/tiny/depth"))
    >>> est(image).depth          # image (H, W, 3) in [0, 1] -> (H, W) metres
    """

    @register_to_config
    def __init__(self, net_config: dict | None = None, fov_deg: float = DEFAULT_FOV_DEG, min_depth: float = 1e-2,
                 max_depth: float = 1e3, test_time_flip: bool = True, edge_median_radius: int = 3) -> None:
        super().__init__()
        self.net = TinyDepthNet(**(net_config or {}))

    @classmethod
    def from_net(cls, net: TinyDepthNet, **kwargs) -> TinyDepthEstimator:
        """Wrap a trained `TinyDepthNet` (its config becomes `net_config`; the net itself is kept, on its device
        and dtype)."""
        with torch.device("meta"):  # the placeholder net is replaced at once: no weights to initialise
            estimator = cls(net_config={k: v for k, v in net.config.items() if not k.startswith("_")}, **kwargs)
        estimator.net = net
        return estimator

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> DepthPrediction:
        """image: `(H, W, 3)` float in [0, 1] -> depth `(H, W)` metres and K `(3, 3)` for `(H, W)`."""
        h, w = int(image.shape[0]), int(image.shape[1])
        x = image.permute(2, 0, 1)[None].to(device=execution_device(self), dtype=self.net.dtype)
        log_depth = self.net.predict(x, self.config.test_time_flip)[0]
        if self.config.edge_median_radius:
            log_depth = sharpen_depth_edges(log_depth, image.to(log_depth.device), self.config.edge_median_radius)
        depth = log_depth.exp().clamp(self.config.min_depth, self.config.max_depth)
        return DepthPrediction(depth=depth, K=intrinsics_from_fov(self.config.fov_deg, h, w).float())
