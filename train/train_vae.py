"""Train the VAEs: (a) the RGB Wan VAE (tiny only) and (b) the motion-sensitive VAE (adaptors + decoder).

    # stage a, tiny only (no pretrained Wan VAE exists at this size)
    python train/train_vae.py --config train/configs/tiny_vae_rgb.yaml --max-minutes 9
    # stage b: MotionVAE = VAE (encoder copied from `vae/`, frozen) + encoder/decoder adaptors
    accelerate launch --config_file train/accelerate/single_gpu.yaml train/train_vae.py \
        --config train/configs/tiny_motion_vae.yaml --export-dir assets/weights/tiny
    accelerate launch --config_file train/accelerate/ddp.yaml train/train_vae.py \
        --config train/configs/paper_motion_vae.yaml

Stage a: L1 + KL on RGB videos in [-1, 1] (pixels that change over time weigh `1 + change_weight`; a
`motion_fraction` of each batch is motion pseudo-videos, so the encoder that stage b freezes can carry motion); the
end sets `latents_mean/std` from the data. Stage b (docs/method.md, "Motion-sensitive VAE"): the VAE encoder is
frozen; the encoder adaptor, the VAE decoder and the decoder adaptor are trained with an L1 loss on the normalised
motion video, weighted by track visibility (hidden tracks weigh `hidden_weight`), with `depth_weighted` by frame-0 depth
(so the loss follows the metric error) and by `moving_weight` on tracks that move; `axis_balanced` gives the three
motion axes equal shares, and `l1_weight` / `mse_weight` mix in squared errors (with L1 alone a tiny VAE keeps one
axis). A tiny motion VAE can also start `from_scratch` (its own architecture, encoder trained) with `dense_clips`
dense random videos per step whose plain reconstruction is added to the loss: without them a fresh tiny VAE learns
to decode zero motion. Validation reports the reconstruction end-point error in metric units after the inverse
normalisation (`val/epe_m`), beside the error in m, and the relative error of each motion axis on moving tracks
(`val/moving_rel_{x,y,z}`: 1 = that axis is decoded as no motion, which the overall error alone can hide when
depth motion dominates it).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

import torch

from more4d.data.synth import generate_batch
from more4d.eval.metrics import motion_axis_l1, psnr, relative_error, track_epe
from more4d.geometry import denormalize_motion, moving_tracks, video_to_motion
from more4d.models.builders import build_tiny_motion_vae
from more4d.training.config import TrainConfig, add_common_args, check, config_from_args
from more4d.training.data import batches, motion_targets, synth_config, validation_batch
from more4d.training.records import save_image_grid
from more4d.training.run import Run, ema_weights, entry, load_init, trainable


@dataclass
class VAEConfig(TrainConfig):
    stage: Literal["rgb", "motion"] = "motion"
    kl_weight: float = 1e-6            # stage a
    sample_posterior: bool = True      # stage a: decode a posterior sample (False: its mean, a plain autoencoder)
    change_weight: float = 0.0         # stage a: extra weight of pixels that differ from frame 0 (temporal path)
    motion_fraction: float = 0.0       # stage a: share of each batch given as motion pseudo-videos tanh(g m / 2)
    motion_gain: float | None = None   # stage a: g of those videos; stage b: reset the adaptors to this gain
    copy_decoder_from_vae: bool = False  # stage b: start the motion VAE's decoder from `vae/` too
    train_encoder: bool = False        # stage b: train the Wan encoder too (the method freezes it)
    hidden_weight: float = 0.1         # stage b: loss weight of tracks hidden in a frame (visible ones weigh 1)
    depth_weighted: bool = True        # stage b: weigh each track by z0 / mean z0 (the metric error is |dm| * z0)
    moving_weight: float = 1.0         # stage b: extra weight of tracks that move (static backdrop dominates otherwise)
    axis_balanced: bool = False        # stage b: weigh each motion axis by 1 / its mean |m| on moving tracks
    l1_weight: float = 1.0             # stage b: per-element loss l1_weight |e| + mse_weight e^2 of the reconstruction
    mse_weight: float = 0.0            #   (motion and dense videos); L1 alone keeps one axis, squares share them out
    train_encoder_adaptor: bool = True  # the seed's code never trains it; the method does
    copy_encoder_from_vae: bool = True  # stage b: start the motion VAE's (frozen) encoder from `vae/`
    from_scratch: bool = False         # stage b, tiny: a fresh motion VAE of the preset's architecture (not init_from's)
    dense_clips: int = 0               # stage b: dense random videos per step; their reconstruction error joins the loss
    num_stat_clips: int = 64           # clips used to set latents_mean/std at the end

    def validate(self) -> None:
        super().validate()
        check(self.kl_weight >= 0 and self.hidden_weight >= 0, "kl_weight/hidden_weight", ">= 0",
              (self.kl_weight, self.hidden_weight))
        check(self.moving_weight > 0, "moving_weight", "> 0", self.moving_weight)
        check(self.change_weight >= 0, "change_weight", ">= 0", self.change_weight)
        check(0 <= self.motion_fraction <= 1, "motion_fraction", "in [0, 1]", self.motion_fraction)
        check(self.motion_gain is None or self.motion_gain > 0, "motion_gain", "> 0", self.motion_gain)
        check(self.dense_clips >= 0, "dense_clips", ">= 0", self.dense_clips)
        check(min(self.l1_weight, self.mse_weight) >= 0 and self.l1_weight + self.mse_weight > 0,
              "l1_weight/mse_weight", ">= 0, not both 0", (self.l1_weight, self.mse_weight))
        if self.from_scratch:
            check(self.preset == "tiny", "preset", "'tiny' with from_scratch (full scale starts from Wan's VAE)",
                  self.preset)
            check(self.train_encoder and not (self.copy_encoder_from_vae or self.copy_decoder_from_vae),
                  "train_encoder/copy_encoder_from_vae/copy_decoder_from_vae", "true/false/false with from_scratch",
                  (self.train_encoder, self.copy_encoder_from_vae, self.copy_decoder_from_vae))


def to_video(frames: torch.Tensor) -> torch.Tensor:
    """uint8 `(B, T, H, W, 3)` -> `(B, 3, T, H, W)` in [-1, 1]."""
    return frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def build_models(cfg: VAEConfig) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
    """The model to train and its trainable parameters (stage b: adaptors + decoder; encoder frozen)."""
    if cfg.stage == "rgb":
        vae = load_init(cfg, "vae")["vae"].train().requires_grad_(True)
        return vae, trainable(vae)
    copied = [*(("encoder", "quant_conv") if cfg.copy_encoder_from_vae else ()),
              *(("decoder", "post_quant_conv") if cfg.copy_decoder_from_vae else ())]
    if cfg.from_scratch:
        comps = {"motion_vae": build_tiny_motion_vae(cfg.seed)}
    else:
        comps = load_init(cfg, "motion_vae", *(("vae",) if copied else ()))
    mvae = comps["motion_vae"].train()
    for part in copied:
        getattr(mvae.vae, part).load_state_dict(getattr(comps["vae"], part).state_dict())
    if cfg.motion_gain is not None:
        mvae.reset_adaptors(cfg.motion_gain)
    mvae.requires_grad_(False)
    parts = [mvae.vae.decoder, mvae.vae.post_quant_conv, mvae.decoder_adaptor]
    parts += [mvae.encoder_adaptor] if cfg.train_encoder_adaptor else []
    parts += [mvae.vae.encoder, mvae.vae.quant_conv] if cfg.train_encoder else []
    for part in parts:
        part.requires_grad_(True)
    return mvae, trainable(mvae)


CHANGE_THRESHOLD = 0.05  # in [-1, 1] units: a pixel "changes" when some channel moves this far from frame 0


def motion_pseudo_video(batch, gain: float) -> torch.Tensor:
    """The batch's motion videos as the motion VAE's encoder adaptor maps them at init: `tanh(g m / 2)`."""
    return torch.tanh(gain / 2 * motion_targets(batch)[0])


def rgb_step(vae: torch.nn.Module, batch, cfg: VAEConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 + KL; with `change_weight`, pixels that differ from frame 0 weigh `1 + change_weight`, and the first
    `motion_fraction` of the batch is replaced by its motion pseudo-videos.

    Most synthetic clips are nearly static, so plain L1 is minimised by a VAE that copies frame 0 and drops change
    over time (`temporal_probe` ~ 1); the motion VAE's frozen encoder then cannot carry motion.
    """
    x = to_video(batch.frames)
    k = round(len(x) * cfg.motion_fraction)
    if k:  # the frozen encoder of the motion VAE must carry motion: let this VAE see what it will be fed
        x = torch.cat([motion_pseudo_video(batch, cfg.motion_gain or 1.0)[:k].to(x), x[k:]])
    posterior = vae.encode(x).latent_dist
    z = posterior.sample() if cfg.sample_posterior else posterior.mode()
    err = (vae.decode(z).sample.float() - x).abs()
    l1 = err.mean()
    loss = l1
    if cfg.change_weight:
        change = ((x - x[:, :, :1]).abs().amax(1, keepdim=True) > CHANGE_THRESHOLD).float()
        loss = loss + cfg.change_weight * (err * change).mean()
    kl = posterior.kl().mean() / x[0].numel()
    return loss + cfg.kl_weight * kl, {"train/l1": float(l1.detach()), "train/kl": float(kl.detach())}


def temporal_probe(vae: torch.nn.Module, num_frames: int, height: int, width: int) -> float:
    """How much of a change over time the RGB VAE loses: 0 = kept, 1 = lost.

    A flat grey square appears at frame 1 on an empty video; the score is the mean reconstruction error inside the
    square over frames 1.. divided by its amplitude. A VAE that only keeps frame 0 scores about 1, and its frozen
    encoder then cannot carry motion (all of m is in frames 1..).
    """
    x = torch.zeros(1, 3, num_frames, height, width, device=next(vae.parameters()).device)
    box = (slice(None), slice(None), slice(1, None), slice(height // 4, height * 3 // 4), slice(width // 4, width * 3 // 4))
    x[box] = 0.5
    recon = vae.decode(vae.encode(x).latent_dist.mode()).sample.float()
    return float((recon[box] - x[box]).abs().mean() / 0.5)


@torch.no_grad()
def motion_video_error(vae: torch.nn.Module, batch, gain: float) -> float:
    """Relative reconstruction error of the RGB VAE on the moving pixels of motion pseudo-videos tanh(g m / 2).

    What the motion VAE's frozen copy of this encoder must carry: 0 = kept, 1 = decoded as no motion.
    """
    p = motion_pseudo_video(batch, gain).to(next(vae.parameters()).device)
    recon = vae.decode(vae.encode(p).latent_dist.mode()).sample.float()
    moving = moving_tracks(p)[:, None, None].expand_as(p)
    return float((recon - p).abs()[moving].mean() / p.abs()[moving].mean().clamp_min(1e-8))


class RoundTrip(torch.nn.Module):
    """Stage b's forward pass as one module (what `cuda_graphs` captures): motion videos `m` through the whole
    MotionVAE, and dense videos (if any) through its Wan VAE alone."""

    def __init__(self, mvae: torch.nn.Module) -> None:
        super().__init__()
        self.mvae = mvae

    def forward(self, m: torch.Tensor, *dense: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`(motion reconstruction,)`, plus the dense videos' reconstruction when they are given."""
        recon = self.mvae.decode_motion(self.mvae.encode_motion(m)).float()
        return (recon, *(self.mvae.decode_video(self.mvae.encode_video(d)).float() for d in dense))


def dense_videos(n: int, shape: tuple[int, int, int], seed: int, device: torch.device) -> torch.Tensor:
    """`n` dense random videos `(n, 3, T, H, W)` in [-0.8, 0.8]: an independent field per frame and channel on an
    (H/8, W/8) grid (one value per latent pixel), upsampled trilinearly. Unlike motion videos they have content
    everywhere and in every frame, which keeps a fresh encoder's temporal path from collapsing."""
    T, H, W = shape
    low = torch.rand(n, 3, T, H // 8, W // 8, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8
    return torch.nn.functional.interpolate(low.to(device), size=shape, mode="trilinear", align_corners=True)


AXIS_WEIGHT_MAX = 10.0  # cap of an axis weight when that axis barely moves in a batch


def axis_weights(m: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-axis loss weights `(1, 3, 1, 1, 1)` of motion videos `m (B, 3, T, H, W)`: the mean over axes of the
    `weight`-weighted mean |m_a| (`weight (B, T, H, W)`), divided by each axis's own.

    In the tiny data depth motion on moving tracks is 2-3x the image-plane motion; these weights give each axis an
    equal share of the loss. With L1 they do not bring back a lost axis; with squared errors they help.
    """
    w = weight.unsqueeze(1)
    scale = (m.detach().abs() * w).sum(dim=(0, 2, 3, 4)) / w.sum().clamp_min(1e-12)
    ratio = scale.mean() / scale.clamp_min(1e-12)
    return ratio.clamp(max=AXIS_WEIGHT_MAX).view(1, 3, 1, 1, 1)


def recon_error(abs_err: torch.Tensor, cfg: VAEConfig) -> torch.Tensor:
    """The per-element loss of absolute errors `e`: `l1_weight e + mse_weight e^2`.

    A tiny Wan VAE trained with L1 alone keeps one channel of its input and drops the other two, on motion videos and
    on dense random images alike; with squared errors it learns all three, but less precisely where errors are small
    (static tracks): the sum takes both.
    """
    return cfg.l1_weight * abs_err + cfg.mse_weight * abs_err.square()


def motion_step(forward: torch.nn.Module, batch, cfg: VAEConfig,
                dense: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted `recon_error` on the motion video (+ its plain mean on `dense` videos); `forward` is a `RoundTrip`."""
    m, vis, valid, _ = motion_targets(batch)
    recon, *dense_recon = forward(m, *([] if dense is None else [dense]))
    B, _, T, H, W = m.shape
    weight = (vis.float() + cfg.hidden_weight * (~vis).float()) * valid.view(B, 1, H, W).float()
    if cfg.depth_weighted:  # an error dm in m is an error of about |dm| * z0 in metres
        z0 = batch.points[:, 0, :, 2].float().nan_to_num(0.0).clamp_min(0.0) * valid
        weight = weight * (z0 / (z0.sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1))).view(B, 1, H, W)
    moving = moving_tracks(m)
    weight = weight * (1.0 + (cfg.moving_weight - 1.0) * moving.float()).unsqueeze(1)
    err = (recon - m).abs()  # (B, 3, T, H, W)
    axes = axis_weights(m, weight * moving.unsqueeze(1)) if cfg.axis_balanced else 1.0
    loss = ((recon_error(err, cfg) * axes).mean(dim=1) * weight).sum() / weight.sum().clamp_min(1.0)
    visible = vis & valid.view(B, 1, H, W)
    logs = {"train/l1_visible": float((err.detach().mean(dim=1) * visible).sum() / visible.sum().clamp_min(1))}
    if dense is not None:
        dense_err = (dense_recon[0] - dense).abs()
        loss = loss + recon_error(dense_err, cfg).mean()
        logs["train/dense_l1"] = float(dense_err.detach().mean())
    return loss, logs


@torch.no_grad()
def set_latent_stats(model: torch.nn.Module, latents: torch.Tensor) -> None:
    """Write per-channel mean/std of raw latents `(B, 16, t, h, w)` into the config(s) used for normalisation:
    the VAE's, and for a MotionVAE also its own (which rebuilds the inner VAE on load)."""
    z = latents.float().transpose(0, 1).flatten(1)
    stats = {"latents_mean": z.mean(1).tolist(), "latents_std": z.std(1).clamp_min(1e-3).tolist()}
    for target in {model, getattr(model, "vae", model)}:
        target.register_to_config(**stats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    cfg = config_from_args(VAEConfig, args)
    name = "vae" if cfg.stage == "rgb" else "motion_vae"
    run = Run(cfg, name, argv)

    model, params = build_models(cfg)
    if cfg.gradient_checkpointing:
        (model if cfg.stage == "rgb" else model.vae).enable_gradient_checkpointing()
    optimizer = run.optimizer(params)
    model, optimizer, lr_scheduler = run.prepare(model, optimizer, run.lr_scheduler(optimizer))
    run.track({name: model})
    run.resume(args.resume)
    val = validation_batch(cfg, run.device)
    shape = (cfg.data.num_frames, cfg.data.height, cfg.data.width)
    if cfg.stage == "motion":  # with `cuda_graphs`, captured for these input shapes (batch, dense clips)
        sizes = [n for n in (cfg.data.batch_size, cfg.dense_clips) if n]
        forward = run.graphed(RoundTrip(model), *(torch.zeros(n, 3, *shape, device=run.device) for n in sizes))

    def train_step(batch) -> tuple[torch.Tensor, dict[str, float]]:
        if cfg.stage == "rgb":
            return rgb_step(model, batch, cfg)
        dense = None
        if cfg.dense_clips:
            dense = dense_videos(cfg.dense_clips, shape, cfg.seed * 1_000_003 + run.step, run.device)
        return motion_step(forward, batch, cfg, dense)

    def log_validation(step: int) -> dict[str, float]:
        m_ = run.models[name]
        path = run.out / "samples" / f"step_{step:07d}.png"
        ts = [0, val.frames.shape[1] // 2, val.frames.shape[1] - 1]
        if cfg.stage == "rgb":
            x = to_video(val.frames)
            recon = m_.decode(m_.encode(x).latent_dist.mode()).sample.float().clamp(-1, 1)
            a, b = (x.permute(0, 2, 3, 4, 1) + 1) / 2, (recon.permute(0, 2, 3, 4, 1) + 1) / 2
            rows = [[a[i, t].cpu().numpy() for t in ts] + [b[i, t].cpu().numpy() for t in ts]
                    for i in range(min(2, len(val)))]
            save_image_grid(path, rows, col_titles=[f"gt t={t}" for t in ts] + [f"recon t={t}" for t in ts])
            return {"val/psnr": float(psnr(b, a).mean()), "val/temporal_probe": temporal_probe(m_, *x.shape[2:]),
                    "val/motion_moving_rel": motion_video_error(m_, val, cfg.motion_gain or 1.0)}
        m, vis, valid, alphas = motion_targets(val)
        recon = m_.decode_motion(m_.encode_motion(m)).float()
        pred = torch.stack([denormalize_motion(video_to_motion(recon[b]), val.points[b, 0], alphas[b])
                            for b in range(len(alphas))])
        vis_n = vis.flatten(2)
        rows = [[m[i, :, t].abs().sum(0).cpu().numpy() for t in ts] + [recon[i, :, t].abs().sum(0).cpu().numpy()
                                                                     for t in ts] for i in range(min(2, len(val)))]
        save_image_grid(path, rows, col_titles=[f"|m| t={t}" for t in ts] + [f"|recon| t={t}" for t in ts])
        moving = moving_tracks(m)
        err, ref = motion_axis_l1(recon.movedim(1, -1), m.movedim(1, -1), moving[:, None])
        moving = moving.flatten(1)
        return {**{f"val/moving_rel_{a}": float(v) for a, v in zip("xyz", relative_error(err, ref))},
                "val/epe_m": float(track_epe(pred, val.points, vis_n, valid).nanmean()),
                "val/epe_moving_m": float(track_epe(pred, val.points, vis_n, valid & moving).nanmean()),
                "val/epe_static_m": float(track_epe(pred, val.points, vis_n, valid & ~moving).nanmean()),
                "val/l1_m": float((recon - m).abs().mean())}

    stop = run.fit(train_step, batches(cfg, run.accelerator, run.step), optimizer, lr_scheduler, params,
                   samples_per_batch=cfg.data.batch_size, validate=log_validation)
    final = run.validate(log_validation)
    # normalisation stats of the exported (EMA) weights; a decoder-only fine-tune keeps the latents (and STraG's)
    if run.is_main and cfg.export_dir and (cfg.stage == "rgb" or cfg.train_encoder_adaptor or cfg.train_encoder):
        module = run.models[name]
        vae = module if cfg.stage == "rgb" else module.vae
        latents = []
        with ema_weights(module, run.emas.get(name)), torch.no_grad(), run.accelerator.autocast():
            for first in range(0, cfg.num_stat_clips, cfg.data.batch_size):
                clips = generate_batch(range(first, first + cfg.data.batch_size), synth_config(cfg.data), run.device)
                x = to_video(clips.frames) if cfg.stage == "rgb" else module.encoder_adaptor(motion_targets(clips)[0])
                latents.append(vae.encode(x).latent_dist.mode().float())
        set_latent_stats(module, torch.cat(latents))
    run.finish(stop, final)
    return 0


if __name__ == "__main__":
    entry(main)
