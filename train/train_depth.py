"""Train the tiny metric depth net (`TinyDepthNet`) on TrajScene-Synth frames (the embedded default only).

    python train/train_depth.py --config train/configs/tiny_depth.yaml --max-minutes 9
    accelerate launch --config_file train/accelerate/single_gpu.yaml train/train_depth.py \
        --config train/configs/tiny_depth.yaml --export-dir assets/weights/tiny

Loss: L1 on log depth plus a scale-invariant log term, on pixels that see a surface, computed at the full
image size after the net's working-resolution prediction is upsampled (`TinyDepthNet.predict`, as the estimator
runs it).
At full scale more4d uses UniDepth-V2 (not trained here).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

import torch

from more4d.depth import TinyDepthNet
from more4d.eval.metrics import depth_abs_rel, depth_delta1
from more4d.training.config import TrainConfig, add_common_args, check, config_from_args
from more4d.training.data import batches, validation_batch
from more4d.training.records import save_image_grid
from more4d.training.run import Run, entry, load_init, trainable

DEPTH_EPS = 1e-3


@dataclass
class DepthModelConfig:
    block_channels: list[int] = field(default_factory=lambda: [24, 48, 96, 160])
    norm_groups: int = 8
    sample_size: int = 128


@dataclass
class DepthConfig(TrainConfig):
    model: DepthModelConfig = field(default_factory=DepthModelConfig)
    frames_per_clip: int = 4         # frames of each clip used per step (all see the same scene)
    si_weight: float = 0.5           # weight of the scale-invariant log term
    hflip_prob: float = 0.5

    def validate(self) -> None:
        super().validate()
        check(1 <= self.frames_per_clip <= self.data.num_frames, "frames_per_clip",
              f"in [1, {self.data.num_frames}]", self.frames_per_clip)


def build_model(cfg: DepthConfig) -> TinyDepthNet:
    """The net of `init_from/depth` if given (the shipped architecture), else a new one from `model`."""
    if cfg.init_from:
        return load_init(cfg, "depth")["depth"].net.requires_grad_(True)
    kwargs = dataclasses.asdict(cfg.model)
    return TinyDepthNet(**{**kwargs, "block_channels": tuple(kwargs["block_channels"])})


def depth_loss(log_pred: torch.Tensor, depth: torch.Tensor, si_weight: float) -> torch.Tensor:
    """L1 in log depth + scale-invariant term, per image over pixels with depth > eps. `(B, H, W)` each."""
    valid = (depth > DEPTH_EPS).float()
    diff = (log_pred - depth.clamp_min(DEPTH_EPS).log()) * valid
    n = valid.sum(dim=(1, 2)).clamp_min(1.0)
    l1 = diff.abs().sum(dim=(1, 2)) / n
    mean = diff.sum(dim=(1, 2)) / n
    si = (diff.pow(2).sum(dim=(1, 2)) / n - mean.pow(2)).clamp_min(0.0).sqrt()
    return (l1 + si_weight * si).mean()


def sample_frames(batch, k: int, gen: torch.Generator, hflip_prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """k random frames per clip -> rgb `(B*k, 3, H, W)` in [0, 1] and depth `(B*k, H, W)`."""
    B, T = batch.frames.shape[:2]
    t = torch.stack([torch.randperm(T, generator=gen)[:k] for _ in range(B)]).to(batch.frames.device)
    b = torch.arange(B, device=t.device)[:, None].expand(B, k)
    rgb = batch.frames[b, t].flatten(0, 1).permute(0, 3, 1, 2).float() / 255.0
    depth = batch.depth[b, t].flatten(0, 1).float()
    flip = (torch.rand(rgb.shape[0], generator=gen) < hflip_prob).to(rgb.device)
    rgb = torch.where(flip[:, None, None, None], rgb.flip(-1), rgb)
    depth = torch.where(flip[:, None, None], depth.flip(-1), depth)
    return rgb, depth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    cfg = config_from_args(DepthConfig, args)
    run = Run(cfg, "depth", argv)

    net = build_model(cfg).train()
    params = trainable(net)
    optimizer = run.optimizer(params)
    net, optimizer, lr_scheduler = run.prepare(net, optimizer, run.lr_scheduler(optimizer))
    run.track({"depth": net})
    run.resume(args.resume)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + run.step * 31 + run.accelerator.process_index)
    val = validation_batch(cfg, run.device)

    def train_step(batch) -> tuple[torch.Tensor, dict[str, float]]:
        rgb, depth = sample_frames(batch, cfg.frames_per_clip, gen, cfg.hflip_prob)
        return depth_loss(net.predict(rgb), depth, cfg.si_weight), {}

    def log_validation(step: int) -> dict[str, float]:
        model = run.models["depth"]
        rgb = val.frames[:, 0].permute(0, 3, 1, 2).float() / 255.0
        gt = val.depth[:, 0].float()
        pred = model.predict(rgb).exp()
        valid = gt > DEPTH_EPS
        rows = [[rgb[i].permute(1, 2, 0).cpu().numpy(), gt[i].cpu().numpy(), pred[i].cpu().numpy()]
                for i in range(min(4, len(rgb)))]
        save_image_grid(run.out / "samples" / f"step_{step:07d}.png", rows, col_titles=["image", "gt", "pred"])
        return {"val/abs_rel": float(depth_abs_rel(pred, gt, valid).nanmean()),
                "val/delta1": float(depth_delta1(pred, gt, valid).nanmean())}

    stop = run.fit(train_step, batches(cfg, run.accelerator, run.step), optimizer, lr_scheduler, params,
                   samples_per_batch=cfg.data.batch_size, validate=log_validation)
    final = run.validate(log_validation)
    run.finish(stop, final)
    return 0


if __name__ == "__main__":
    entry(main)
