"""Train 4D-STraG: flow matching on motion latents, conditioned on image, depth, text and MPM features.

    python train/train_strag.py --config train/configs/tiny_strag.yaml --max-minutes 9
    accelerate launch --config_file train/accelerate/single_gpu.yaml train/train_strag.py \
        --config train/configs/tiny_strag.yaml --export-dir assets/weights/tiny
    accelerate launch --config_file train/accelerate/deepspeed_zero2.yaml train/train_strag.py \
        --config train/configs/paper_strag.yaml

Recipe (METHOD.md "4D-STraG"): x_t = (1 - s) x_0 + s e with s from a shift-5 grid (uniform or logit-normal u,
s = shift u / (1 + (shift - 1) u)), timestep 1000 s, target velocity e - x_0, MSE. Input channels: [noisy motion
latent | image-video latent | start slot (zeros) | depth-video latent], built exactly as `STraGPipeline` does.
Condition dropout for CFG: the caption becomes "" (the inference negative prompt) with p_text, the condition
latents and MPM features become zeros with p_cond. The text encoder and VAE are frozen; the MPM feature extractor
is trainable at tiny scale and frozen at full scale (OmniMAE), while the MPM adapter and MAdaNorm (inside the
transformer) always train.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from _lib.config import TrainConfig, add_common_args, check, config_from_args
from _lib.data import batches, motion_targets, validation_batch
from _lib.flow import flow_matching_loss
from _lib.records import save_image_grid
from _lib.run import Run, entry, load_init, trainable

from more4d.errors import InputError
from more4d.eval.metrics import track_epe
from more4d.models.text_encoder import encode_prompt
from more4d.pipelines.strag import STraGPipeline, encode_conditions


@dataclass
class STraGConfig(TrainConfig):
    timestep_sampling: Literal["uniform", "logit_normal"] = "uniform"
    shift: float = 5.0
    text_dropout: float = 0.1
    cond_dropout: float = 0.02
    train_motion_encoder: bool = True   # tiny: the extractor trains; paper scale: OmniMAE stays frozen
    val_inference_steps: int = 10
    val_guidance_scale: float = 4.0
    cache_latents: bool = False         # keep each clip's motion/condition latents by seed (the VAE is frozen): with
                                        # data.source synth_pool the clips recur every epoch and are encoded once

    def validate(self) -> None:
        super().validate()
        check(0 <= self.text_dropout < 1 and 0 <= self.cond_dropout < 1, "text_dropout/cond_dropout", "in [0, 1)",
              (self.text_dropout, self.cond_dropout))
        check(self.shift > 0, "shift", "> 0", self.shift)


def displacement(points: torch.Tensor, image_size: tuple[int, int]) -> np.ndarray:
    """|P_T - P_0| per frame-0 pixel as an `(H, W)` map (for sample PNGs)."""
    return (points[-1] - points[0]).norm(dim=-1).view(*image_size).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    cfg = config_from_args(STraGConfig, args)
    run = Run(cfg, "strag", argv)

    # 1. models: frozen VAE + text encoder; trainable transformer (+ tiny motion encoder)
    comps = load_init(cfg, "tokenizer", "text_encoder", "motion_vae", "transformer", "motion_encoder")
    tokenizer, text_encoder, motion_vae = comps["tokenizer"], comps["text_encoder"], comps["motion_vae"]
    transformer = comps["transformer"].train().requires_grad_(True)
    motion_encoder = comps["motion_encoder"].train().requires_grad_(cfg.train_motion_encoder)
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision, torch.float32)
    for frozen in (text_encoder, motion_vae):
        torch.nn.Module.to(frozen, run.device, weight_dtype)  # plain cast, no diffusers fp32 warning
    params = trainable(transformer) + trainable(motion_encoder)
    optimizer = run.optimizer(params)
    tracked = {"strag/transformer": transformer} | ({"strag/motion_encoder": motion_encoder}
                                                     if cfg.train_motion_encoder else {})
    *prepared, optimizer, lr_scheduler = run.prepare(*tracked.values(), optimizer, run.lr_scheduler(optimizer))
    tracked = dict(zip(tracked, prepared))
    transformer = tracked["strag/transformer"]
    motion_encoder = tracked.get("strag/motion_encoder", motion_encoder.to(run.device, weight_dtype))
    run.track(tracked)
    run.resume(args.resume)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + run.step * 31 + run.accelerator.process_index)
    val = validation_batch(cfg, run.device)

    # 2. one step of flow matching
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def encode(batch, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Motion latents (the targets) and condition latents of a batch."""
        m, _, _, _ = motion_targets(batch)
        latents = motion_vae.encode_motion(m.to(weight_dtype)).float()
        return latents, encode_conditions(motion_vae, images, batch.depth[:, 0].float(), batch.frames.shape[1])

    def cached_encode(batch, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seeds = [meta.get("seed") for meta in batch.metas]
        if None in seeds:
            raise InputError("cache_latents needs clips with a `seed` in their metadata (TrajScene-Synth)")
        new = [i for i, s in enumerate(seeds) if s not in cache]
        if new:
            for i, latent, cond in zip(new, *encode(batch.select(new), images[new])):
                cache[seeds[i]] = (latent, cond)
        return tuple(torch.stack([cache[s][k] for s in seeds]) for k in range(2))

    def train_step(batch) -> tuple[torch.Tensor, dict[str, float]]:
        B = batch.frames.shape[0]
        images = batch.frames[:, 0].float() / 255.0
        latents, cond = (cached_encode if cfg.cache_latents else encode)(batch, images)
        with torch.no_grad():
            drop_text = torch.rand(B, generator=gen) < cfg.text_dropout
            prompts = ["" if d else c for d, c in zip(drop_text.tolist(), batch.captions)]
            embeds = encode_prompt(tokenizer, text_encoder, prompts, device=run.device)
        features = motion_encoder(images.permute(0, 3, 1, 2))
        keep = (torch.rand(B, generator=gen) >= cfg.cond_dropout).to(run.device)
        cond = cond * keep.view(B, 1, 1, 1, 1).to(cond.dtype)
        features = features * keep.view(B, *[1] * (features.ndim - 1)).to(features.dtype)
        loss = flow_matching_loss(
            lambda x, t: transformer(hidden_states=x, timestep=t, encoder_hidden_states=embeds,
                                     motion_features=features, return_dict=False)[0],
            latents, cond, cfg.timestep_sampling, cfg.shift, gen)
        return loss, {}

    # 3. validation: the real pipeline on held-out clips with their true depth
    def log_validation(step: int) -> dict[str, float]:
        pipe = STraGPipeline(tokenizer, text_encoder, motion_vae, run.models["strag/transformer"],
                             run.models.get("strag/motion_encoder", motion_encoder),
                             resolution=(cfg.data.height, cfg.data.width))
        pipe.set_progress_bar_config(disable=True)
        epe, zero, rows = [], [], []
        for b in range(len(val)):
            scene = pipe(val.frames[b, 0].float().cpu() / 255.0, val.captions[b], num_frames=val.frames.shape[1],
                         num_inference_steps=cfg.val_inference_steps, guidance_scale=cfg.val_guidance_scale,
                         seed=b, depth=val.depth[b, 0].float().cpu())
            gt, vis = val.points[b].float().cpu(), val.visibility[b].cpu()
            epe.append(track_epe(scene.points, gt, vis))
            zero.append(track_epe(gt[:1].expand_as(gt), gt, vis))
            if b < 3:
                rows.append([val.frames[b, 0].cpu().numpy() / 255.0, displacement(gt, scene.image_size),
                             displacement(scene.points, scene.image_size)])
        save_image_grid(run.out / "samples" / f"step_{step:07d}.png", rows,
                        row_titles=[c[:40] for c in val.captions[:3]], col_titles=["image", "gt |dP|", "pred |dP|"])
        epe_t, zero_t = torch.stack(epe), torch.stack(zero)
        return {"val/epe": float(epe_t.nanmean()), "val/epe_zero_motion": float(zero_t.nanmean()),
                "val/epe_ratio": float(epe_t.nanmean() / zero_t.nanmean())}

    stop = run.fit(train_step, batches(cfg, run.accelerator, run.step), optimizer, lr_scheduler, params,
                   samples_per_batch=cfg.data.batch_size, validate=log_validation)
    final = run.validate(log_validation)
    run.finish(stop, final)
    return 0


if __name__ == "__main__":
    entry(main)
