"""Train 4D-STraG: flow matching on motion latents, conditioned on image, depth, text and MPM features.

    python train/train_strag.py --config train/configs/tiny_strag.yaml --max-minutes 9
    accelerate launch --config_file train/accelerate/single_gpu.yaml train/train_strag.py \
        --config train/configs/tiny_strag.yaml --export-dir assets/weights/tiny
    accelerate launch --config_file train/accelerate/deepspeed_zero2.yaml train/train_strag.py \
        --config train/configs/paper_strag.yaml

Recipe (docs/method.md, "4D-STraG"): x_t = (1 - s) x_0 + s e with s from a shift-5 grid (uniform or logit-normal u,
s = shift u / (1 + (shift - 1) u)), timestep 1000 s, target velocity e - x_0, MSE. Input channels: [noisy motion
latent | image-video latent | start slot (zeros) | depth-video latent], built exactly as `STraGPipeline` does (the
conditions by the RGB `vae/`, the targets by the motion VAE).
Condition dropout for CFG: the caption becomes "" (the inference negative prompt) with p_text, the condition
latents and MPM features become zeros with p_cond. The VAEs are frozen; the MPM feature extractor is trainable at
tiny scale and frozen at full scale (OmniMAE), while the MPM adapter and MAdaNorm (inside the transformer) always
train. The text encoder is frozen (umT5; at tiny scale the word-level encoder that train_text_encoder.py pretrains
on captions) unless `train_text_encoder`, which trains the tiny one with STraG and exports it as `text_encoder/`.

With `cache_latents` (needs `data.source: synth_pool`) each rendered pool chunk is reduced at once to what a step
needs (frame 0, motion latents, condition latents: about 0.9 MB a clip at 17x256x256 instead of 23 MB), so the
pool can hold tens of thousands of clips.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from more4d.eval.evaluate import prompt_swap
from more4d.eval.metrics import displacement_epe
from more4d.geometry import moving_tracks
from more4d.models.strag_transformer import STraGTransformer
from more4d.models.text_encoder import encode_prompt
from more4d.pipelines.strag import STraGPipeline, encode_conditions
from more4d.training.config import TrainConfig, add_common_args, check, config_from_args
from more4d.training.data import EncodedPool, batches, motion_targets, validation_batch
from more4d.training.flow import flow_matching_loss
from more4d.training.records import save_image_grid
from more4d.training.run import Run, entry, load_init, trainable


@dataclass
class STraGConfig(TrainConfig):
    timestep_sampling: Literal["uniform", "logit_normal"] = "uniform"
    shift: float = 5.0
    text_dropout: float = 0.1
    cond_dropout: float = 0.02
    train_motion_encoder: bool = True   # tiny: the extractor trains; paper scale: OmniMAE stays frozen
    train_text_encoder: bool = False    # tiny: the word-level encoder trains with STraG; paper scale: umT5 frozen
    val_inference_steps: int = 10
    val_guidance_scale: float = 4.0
    cache_latents: bool = False         # synth_pool: encode each clip once as it is rendered (the VAEs are frozen)
    pooled_text: bool = False           # add the pooled caption path (zero-init) to a transformer without one
    moving_weight: float = 1.0          # loss weight of latent cells over moving tracks (static pixels dominate)

    def validate(self) -> None:
        super().validate()
        check(0 <= self.text_dropout < 1 and 0 <= self.cond_dropout < 1, "text_dropout/cond_dropout", "in [0, 1)",
              (self.text_dropout, self.cond_dropout))
        check(self.shift > 0, "shift", "> 0", self.shift)
        check(self.moving_weight > 0, "moving_weight", "> 0", self.moving_weight)
        check(not self.cache_latents or self.data.source == "synth_pool", "data.source", "'synth_pool' with "
              "cache_latents (latents are kept per pool clip)", self.data.source)
        check(not self.train_text_encoder or self.preset == "tiny", "preset", "'tiny' with train_text_encoder "
              "(umT5 stays frozen)", self.preset)


@torch.no_grad()
def encode_clips(batch, vae: torch.nn.Module, motion_vae: torch.nn.Module, moving_weight: float,
                 dtype: torch.dtype) -> EncodedPool:
    """Frame 0 (uint8), motion latents (the targets), condition latents and loss weights of a batch, as kept by
    `cache_latents` and fed to `strag_loss`; the VAEs are frozen."""
    m, _, _, _ = motion_targets(batch)
    images = batch.frames[:, 0]
    latents = motion_vae.encode_motion(m.to(dtype)).float()
    cond = encode_conditions(vae, images.float() / 255.0, batch.depth[:, 0].float(), batch.frames.shape[1])
    cell = m.shape[-1] // latents.shape[-1]  # latent cells over a moving track weigh moving_weight
    moving = F.max_pool2d(moving_tracks(m)[:, None].float(), cell)[:, :, None]  # (B, 1, 1, h, w)
    weight = 1.0 + (moving_weight - 1.0) * moving
    return EncodedPool({"images": images, "latents": latents, "cond": cond.to(dtype), "weight": weight.to(dtype)},
                       batch.captions)


def strag_loss(ex: EncodedPool, transformer: STraGTransformer, motion_encoder: torch.nn.Module,
               tokenizer: Any, text_encoder: torch.nn.Module, cfg: STraGConfig, gen: torch.Generator) -> torch.Tensor:
    """The flow-matching loss of encoded clips `ex`, with caption and condition dropout drawn from `gen`."""
    B, device = len(ex), ex.tensors["latents"].device
    images, latents, cond = ex.tensors["images"].float() / 255.0, ex.tensors["latents"], ex.tensors["cond"]
    drop_text = torch.rand(B, generator=gen) < cfg.text_dropout
    prompts = ["" if d else c for d, c in zip(drop_text.tolist(), ex.captions)]
    embeds = encode_prompt(tokenizer, text_encoder, prompts, device=device)  # grads only if it trains
    features = motion_encoder(images.permute(0, 3, 1, 2))
    keep = (torch.rand(B, generator=gen) >= cfg.cond_dropout).to(device)
    cond = cond * keep.view(B, 1, 1, 1, 1).to(cond.dtype)
    features = features * keep.view(B, *[1] * (features.ndim - 1)).to(features.dtype)
    return flow_matching_loss(
        lambda x, t: transformer(hidden_states=x, timestep=t, encoder_hidden_states=embeds,
                                 motion_features=features, return_dict=False)[0],
        latents, cond, cfg.timestep_sampling, cfg.shift, gen, ex.tensors["weight"])


def displacement(points: torch.Tensor, image_size: tuple[int, int]) -> np.ndarray:
    """|P_T - P_0| per frame-0 pixel as an `(H, W)` map (for sample PNGs)."""
    return (points[-1] - points[0]).norm(dim=-1).view(*image_size).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    cfg = config_from_args(STraGConfig, args)
    run = Run(cfg, "strag", argv)

    # 1. models: frozen VAE (+ umT5); trainable transformer (+ tiny motion encoder, + tiny text encoder)
    comps = load_init(cfg, "tokenizer", "text_encoder", "vae", "motion_vae", "transformer", "motion_encoder")
    tokenizer, text_encoder, vae, motion_vae = (comps[k] for k in ("tokenizer", "text_encoder", "vae", "motion_vae"))
    transformer = comps["transformer"]
    if cfg.pooled_text:
        transformer = STraGTransformer.with_pooled_text(transformer)
    transformer.train().requires_grad_(True)
    motion_encoder = comps["motion_encoder"].train().requires_grad_(cfg.train_motion_encoder)
    text_encoder.train(cfg.train_text_encoder).requires_grad_(cfg.train_text_encoder)
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision, torch.float32)
    for frozen in (vae, motion_vae):
        torch.nn.Module.to(frozen, run.device, weight_dtype)  # plain cast, no diffusers fp32 warning
    params = trainable(transformer) + trainable(motion_encoder) + trainable(text_encoder)
    optimizer = run.optimizer(params)
    tracked = ({"strag/transformer": transformer}
               | ({"strag/motion_encoder": motion_encoder} if cfg.train_motion_encoder else {})
               | ({"text_encoder": text_encoder} if cfg.train_text_encoder else {}))
    *prepared, optimizer, lr_scheduler = run.prepare(*tracked.values(), optimizer, run.lr_scheduler(optimizer))
    tracked = dict(zip(tracked, prepared))
    transformer = tracked["strag/transformer"]
    motion_encoder = tracked.get("strag/motion_encoder", motion_encoder.to(run.device, weight_dtype))
    if not cfg.train_text_encoder:
        torch.nn.Module.to(text_encoder, run.device, weight_dtype)
    text_encoder = tracked.get("text_encoder", text_encoder)
    run.track(tracked)
    run.resume(args.resume)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + run.step * 31 + run.accelerator.process_index)
    val = validation_batch(cfg, run.device)

    # 2. one step of flow matching on encoded clips
    def encode(batch) -> EncodedPool:
        return encode_clips(batch, vae, motion_vae, cfg.moving_weight, weight_dtype)

    def train_step(ex: EncodedPool) -> tuple[torch.Tensor, dict[str, float]]:
        return strag_loss(ex, transformer, motion_encoder, tokenizer, text_encoder, cfg, gen), {}

    # 3. validation: the real pipeline on held-out clips with their true depth; the prompt-swap test where the
    # caption names one direction (as `more4d eval` runs it)
    def log_validation(step: int) -> dict[str, float]:
        pipe = STraGPipeline(tokenizer, run.models.get("text_encoder", text_encoder), vae, motion_vae,
                             run.models["strag/transformer"], run.models.get("strag/motion_encoder", motion_encoder),
                             resolution=(cfg.data.height, cfg.data.width))
        pipe.set_progress_bar_config(disable=True)
        sample = dict(num_frames=val.frames.shape[1], num_inference_steps=cfg.val_inference_steps,
                      guidance_scale=cfg.val_guidance_scale)
        epe, zero, follows, rows = [], [], [], []
        for b in range(len(val)):
            image, depth = val.frames[b, 0].float().cpu() / 255.0, val.depth[b, 0].float().cpu()
            scene = pipe(image, val.captions[b], seed=b, depth=depth, **sample)
            gt, vis = val.points[b].float().cpu(), val.visibility[b].cpu()
            epe.append(displacement_epe(scene.points, gt, vis))
            zero.append(displacement_epe(gt[:1].expand_as(gt), gt, vis))
            swap = prompt_swap(partial(pipe, image, seed=b, depth=depth, **sample), val.captions[b], scene, gt,
                               val.K[b].float().cpu())
            if swap is not None:
                follows.append(float(swap["follows"]))
            if b < 3:
                rows.append([val.frames[b, 0].cpu().numpy() / 255.0, displacement(gt, scene.image_size),
                             displacement(scene.points, scene.image_size)])
        save_image_grid(run.out / "samples" / f"step_{step:07d}.png", rows,
                        row_titles=[c[:40] for c in val.captions[:3]], col_titles=["image", "gt |dP|", "pred |dP|"])
        epe_t, zero_t = torch.stack(epe), torch.stack(zero)
        return {"val/motion_epe": float(epe_t.nanmean()), "val/motion_epe_zero": float(zero_t.nanmean()),
                "val/motion_epe_ratio": float(epe_t.nanmean() / zero_t.nanmean()),
                "val/swap_follow_rate": sum(follows) / len(follows) if follows else float("nan")}

    stream = (batches(cfg, run.accelerator, run.step, reduce=encode) if cfg.cache_latents
              else map(encode, batches(cfg, run.accelerator, run.step)))
    stop = run.fit(train_step, stream, optimizer, lr_scheduler, params,
                   samples_per_batch=cfg.data.batch_size, validate=log_validation)
    final = run.validate(log_validation)
    run.finish(stop, final)
    return 0


if __name__ == "__main__":
    entry(main)
