"""UniDepth-V2 adapter (optional): used only when the `unidepth` package is importable and a local weights
folder (`config.json` + `model.safetensors`, as `UniDepthV2.save_pretrained` writes) is given."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from more4d.depth.base import DepthPrediction
from more4d.depth.tiny import imagenet_normalize
from more4d.errors import InputError

UNIDEPTH_FILES = ("config.json", "model.safetensors")


def unidepth_available() -> bool:
    """Whether the optional `unidepth` package can be imported (it is not on PyPI; install it from its repo)."""
    return importlib.util.find_spec("unidepth") is not None


class UniDepthEstimator:
    """`DepthEstimator` wrapping `unidepth.models.UniDepthV2`: metric depth and predicted K.

    UniDepth's `infer(rgb)` expects 0-255 values and normalises them itself; more4d images are [0, 1], so we
    apply the ImageNet mean/std here and call `infer(..., normalize=False)` (no double scaling).

    Args:
        weights_dir: local folder with `config.json` + `model.safetensors` (nothing is downloaded).
        resolution_level: UniDepth's input-resolution knob in [0, 10) (higher = finer, slower).
    """

    def __init__(self, weights_dir: str | os.PathLike, device: str | torch.device = "cpu",
                 resolution_level: int = 9) -> None:
        folder = Path(weights_dir)
        missing = [f for f in UNIDEPTH_FILES if not (folder / f).is_file()]
        if missing:
            raise InputError(f"UniDepth weights folder {str(folder)!r} is missing: {', '.join(missing)}")
        self.folder, self.device, self.resolution_level = folder, device, resolution_level
        self._model = None

    @property
    def model(self):
        """UniDepthV2, loaded on first use: callers that pass their own depth never need the package."""
        if self._model is None:
            if not unidepth_available():
                raise InputError("depth model 'unidepth' needs the `unidepth` package, which is not installed "
                                 "(pip install git+https://github.com/lpiccinelli-eth/UniDepth), or pass your own "
                                 "depth map (--depth FILE.npy)")
            from unidepth.models import UniDepthV2

            self._model = UniDepthV2.from_pretrained(str(self.folder)).to(self.device).eval()
            self._model.resolution_level = self.resolution_level
            self._model.interpolation_mode = "bilinear"
        return self._model

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> DepthPrediction:
        """image: `(H, W, 3)` float in [0, 1] -> depth `(H, W)` metres and K `(3, 3)` for `(H, W)`."""
        rgb = imagenet_normalize(image.permute(2, 0, 1)[None].float())
        out = self.model.infer(rgb, normalize=False)
        depth = out["depth"][0, 0].float()
        depth = torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.zeros_like(depth))
        return DepthPrediction(depth=depth, K=out["intrinsics"][0].float().cpu())
