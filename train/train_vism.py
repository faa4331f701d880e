"""Train 4D-ViSM: inpaint the holes of splat renders of 4D points (full fine-tune or LoRA).

    python train/train_vism.py --config train/configs/tiny_vism.yaml --max-minutes 9
    accelerate launch --config_file train/accelerate/single_gpu.yaml train/train_vism.py \
        --config train/configs/tiny_vism.yaml --export-dir assets/weights/tiny
    accelerate launch --config_file train/accelerate/deepspeed_zero3_offload.yaml train/train_vism.py \
        --config train/configs/paper_vism.yaml

Pairs (docs/method.md, "4D-ViSM"): a clip's ground-truth tracks are splat-rendered (holes where no visible point
lands) from its own camera or, with synthetic data, from a novel camera; the target is the true video of that camera.
Inputs as `ViSMPipeline` builds them: [noisy latent 16 | packed hole mask 4 | masked-render latent 16], text
tokens (padded to 512) and CLIP image tokens of frame 0, flow matching as in train_strag.py. `lora_rank` set:
peft LoRA on every Linear layer (paper: rank 128, alpha 64), exported as `vism/lora.safetensors`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from more4d.camera import CameraTrajectory
from more4d.eval.metrics import psnr
from more4d.geometry import fov_from_intrinsics
from more4d.models.lora import add_lora, save_lora
from more4d.models.vism import encode_clip_image
from more4d.pipelines.vism import ViSMPipeline
from more4d.pipelines.vism_conditioning import encode_condition, fill_holes, render_views, vae_encode
from more4d.scene import Scene4D
from more4d.training.config import TrainConfig, add_common_args, check, config_from_args
from more4d.training.data import batches, validation_batch
from more4d.training.flow import flow_matching_loss
from more4d.training.records import save_image_grid
from more4d.training.run import Run, ema_weights, entry, load_init, trainable


@dataclass
class ViSMConfig(TrainConfig):
    timestep_sampling: Literal["uniform", "logit_normal"] = "uniform"
    shift: float = 5.0
    text_dropout: float = 0.1
    source_view_prob: float = 0.3      # chance a pair uses the clip's own camera instead of a novel one
    lora_rank: int | None = None       # None: full fine-tune (tiny, trained from scratch)
    lora_alpha: float = 64.0
    train_image_encoder: bool = True   # tiny: trainable; paper: CLIP ViT-H frozen
    val_inference_steps: int = 10
    val_guidance_scale: float = 1.0

    def validate(self) -> None:
        super().validate()
        check(0 <= self.source_view_prob <= 1, "source_view_prob", "in [0, 1]", self.source_view_prob)
        check(self.data.num_novel_views >= 1 or self.source_view_prob == 1, "data.num_novel_views",
              ">= 1 (or source_view_prob 1)", self.data.num_novel_views)


def clip_scene(batch, b: int) -> Scene4D:
    """Clip b's ground-truth tracks as a Scene4D (on the batch's device)."""
    H, W = batch.frames.shape[2:4]
    return Scene4D(points=batch.points[b].float(), colors=batch.colors[b].float(), visibility=batch.visibility[b],
                   K=batch.K[b].float(), image_size=(H, W), fps=float(batch.fps), prompt=batch.captions[b])


def view(batch, b: int, v: int | None) -> tuple[CameraTrajectory, torch.Tensor]:
    """Camera and true frames `(T, H, W, 3)` uint8 of clip b: own camera (`v=None`) or novel view v."""
    T, H = batch.frames.shape[1:3]
    c2w, frames = (batch.c2w[b], batch.frames[b]) if v is None else (batch.novel_c2w[b, v], batch.novel_frames[b, v])
    fov = fov_from_intrinsics(batch.K[b].float().cpu(), H)
    return CameraTrajectory(c2w=c2w.float(), fov_deg=torch.full((T,), fov, device=c2w.device),
                            times=torch.arange(T, device=c2w.device) / float(batch.fps)), frames


def training_pairs(batch, gen: torch.Generator, source_prob: float) -> tuple[torch.Tensor, ...]:
    """Render + hole mask + target for each clip: render `(B, T, H, W, 3)`, hole `(B, T, H, W)`, target same."""
    renders, holes, targets = [], [], []
    views = batch.novel_frames.shape[1]
    for b in range(len(batch)):
        own = views == 0 or float(torch.rand(1, generator=gen)) < source_prob
        traj, frames = view(batch, b, None if own else int(torch.randint(views, (1,), generator=gen)))
        render, hole = render_views(clip_scene(batch, b), [traj], *batch.frames.shape[2:4])
        renders.append(render[0])
        holes.append(hole[0])
        targets.append(frames.float() / 255.0)
    return torch.stack(renders), torch.stack(holes), torch.stack(targets)


@dataclass
class EncodedPairs:
    """A batch's training pairs as the transformer sees them: target latents `(B, 16, f, h, w)`, condition
    latents `(B, 20, f, h, w)` (hole mask + masked render), text embeddings `(B, 512, D)`, frame 0 `(B, H, W, 3)`
    in [0, 1] and the hole mask `(B, T, H, W)`."""

    latents: torch.Tensor
    cond: torch.Tensor
    embeds: torch.Tensor
    first_frames: torch.Tensor
    hole: torch.Tensor


@torch.no_grad()
def encode_pairs(batch, vae: torch.nn.Module, text: ViSMPipeline, cfg: ViSMConfig,
                 gen: torch.Generator) -> EncodedPairs:
    """Render each clip from its own or a novel camera and encode pair and caption with the frozen VAE and text
    encoder (captions dropped to "" with `cfg.text_dropout`)."""
    render, hole, target = training_pairs(batch, gen, cfg.source_view_prob)
    cond = encode_condition(vae, render, hole).latents.float()
    latents = vae_encode(vae, target.permute(0, 4, 1, 2, 3) * 2.0 - 1.0).float()
    drop = torch.rand(len(batch), generator=gen) < cfg.text_dropout
    embeds = text.encode_text(["" if d else c for d, c in zip(drop.tolist(), batch.captions)], latents.device)
    return EncodedPairs(latents, cond, embeds, batch.frames[:, 0].float() / 255.0, hole)


def vism_loss(pairs: EncodedPairs, transformer: torch.nn.Module, image_encoder: torch.nn.Module, cfg: ViSMConfig,
              gen: torch.Generator) -> torch.Tensor:
    """The flow-matching loss of encoded pairs, conditioned on the CLIP tokens of frame 0."""
    image_embeds = encode_clip_image(image_encoder, pairs.first_frames)
    return flow_matching_loss(lambda x, t: transformer(x, t, pairs.embeds, image_embeds, return_dict=False)[0],
                              pairs.latents, pairs.cond, cfg.timestep_sampling, cfg.shift, gen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    cfg = config_from_args(ViSMConfig, args)
    run = Run(cfg, "vism", argv)

    # 1. models: frozen VAE + text encoder; trainable transformer (or its LoRA) and tiny image encoder
    comps = load_init(cfg, "vae", "tokenizer", "text_encoder", "vism_transformer", "vism_image_encoder")
    vae, text = comps["vae"], ViSMPipeline(text_encoder=comps["text_encoder"], tokenizer=comps["tokenizer"])
    transformer = comps["vism_transformer"].train()
    if cfg.lora_rank:
        add_lora(transformer, rank=cfg.lora_rank, alpha=cfg.lora_alpha)  # only the LoRA weights train
    else:
        transformer.requires_grad_(True)
    image_encoder = comps["vism_image_encoder"].train().requires_grad_(cfg.train_image_encoder)
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision, torch.float32)
    for frozen in (vae, text.text_encoder):
        torch.nn.Module.to(frozen, run.device, weight_dtype)  # plain cast, no diffusers fp32 warning
    params = trainable(transformer) + trainable(image_encoder)
    optimizer = run.optimizer(params)
    tracked = {"vism/transformer": transformer} | ({"vism/image_encoder": image_encoder}
                                                   if cfg.train_image_encoder else {})
    *prepared, optimizer, lr_scheduler = run.prepare(*tracked.values(), optimizer, run.lr_scheduler(optimizer))
    tracked = dict(zip(tracked, prepared))
    transformer = tracked["vism/transformer"]
    image_encoder = tracked.get("vism/image_encoder", image_encoder.to(run.device, weight_dtype))
    run.track(tracked, no_export=("vism/transformer",) if cfg.lora_rank else ())
    run.resume(args.resume)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + run.step * 31 + run.accelerator.process_index)
    val = validation_batch(cfg, run.device, novel_views=1)

    # 2. one step
    def train_step(batch) -> tuple[torch.Tensor, dict[str, float]]:
        pairs = encode_pairs(batch, vae, text, cfg, gen)
        loss = vism_loss(pairs, transformer, image_encoder, cfg, gen)
        return loss, {"train/hole_fraction": float(pairs.hole.float().mean())}

    # 3. validation: the real pipeline on a held-out novel view; PSNR in holes vs raw render / push-pull fill
    def log_validation(step: int) -> dict[str, float]:
        pipe = ViSMPipeline(transformer=run.models["vism/transformer"], vae=vae,
                            scheduler=FlowMatchEulerDiscreteScheduler(shift=cfg.shift), text_encoder=text.text_encoder,
                            tokenizer=text.tokenizer, image_encoder=run.models.get("vism/image_encoder", image_encoder),
                            defaults=dict(inpaint="model", composite=False))
        pipe.set_progress_bar_config(disable=True)
        scores: dict[str, list[torch.Tensor]] = {"model": [], "render": [], "pushpull": []}
        rows = []
        for b in range(len(val)):
            traj, frames = view(val, b, 0)
            out = pipe(clip_scene(val, b), traj, num_inference_steps=cfg.val_inference_steps,
                       guidance_scale=cfg.val_guidance_scale, generator=torch.Generator().manual_seed(b),
                       output_type="pt")
            gt, hole = frames.float().cpu() / 255.0, out.mask[0]
            for key, img in (("model", out.frames[0]), ("render", out.render[0]),
                             ("pushpull", fill_holes(out.render[0], hole))):
                scores[key].append(psnr(img, gt, hole).nanmean())
            if b < 3:
                t = gt.shape[0] // 2
                rows.append([x[t].numpy() for x in (out.render[0], out.frames[0], gt)])
        save_image_grid(run.out / "samples" / f"step_{step:07d}.png", rows, col_titles=["render", "vism", "true"])
        mean = {k: float(torch.stack(v).nanmean()) for k, v in scores.items()}
        return {"val/hole_psnr": mean["model"], "val/hole_psnr_render": mean["render"],
                "val/hole_psnr_pushpull": mean["pushpull"]}

    stop = run.fit(train_step, batches(cfg, run.accelerator, run.step, novel_views=cfg.data.num_novel_views),
                   optimizer, lr_scheduler, params, samples_per_batch=cfg.data.batch_size, validate=log_validation)
    final = run.validate(log_validation)
    def export_lora(out_dir) -> None:
        with ema_weights(run.models["vism/transformer"], run.emas.get("vism/transformer")):
            save_lora(run.models["vism/transformer"], out_dir / "vism" / "lora.safetensors")

    run.finish(stop, final, export_extra=export_lora if cfg.lora_rank else None)
    return 0


if __name__ == "__main__":
    entry(main)
