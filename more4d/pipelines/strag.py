"""4D-STraG pipeline: one image + its depth + a prompt -> dense 3D trajectories of every pixel (Scene4D).

Steps (docs/method.md, "4D-STraG"): load image -> bucket to the model's resolution (K follows the resize/crop) ->
metric depth + K -> [surface smoothing of an estimated depth] -> conditions (image video and depth video,
VAE-encoded; start slot zeros) -> text embeddings -> MPM features -> flow-matching denoising (velocity, CFG
batched) -> decode the motion video -> [surface smoothing of the motion] -> inverse depth-guided normalisation with
z0 -> Scene4D. The bracketed steps (`more4d.surface_smoothing`) are the tiny preset's; full scale skips them.

The model has no visibility channel: `Scene4D.visibility` is True for every track with a valid frame-0 depth
(and False for the others, which stay at their frame-0 position).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from more4d.depth import DepthEstimator, GivenDepth, resize_depth
from more4d.errors import InputError
from more4d.geometry import (
    DEFAULT_FOV_DEG,
    backproject_depth,
    denormalize_motion,
    intrinsics_from_fov,
    motion_alphas,
    resize_intrinsics,
    valid_depth_mask,
    video_to_motion,
)
from more4d.io import load_image
from more4d.models.motion_vae import wan_encode
from more4d.models.strag_transformer import LATENT_CHANNELS
from more4d.models.text_encoder import check_prompts, encode_prompt
from more4d.pipelines.base import StagePipeline
from more4d.pipelines.cpu_speedups import use_onednn_conv3d
from more4d.pipelines.schedulers import (
    DEFAULT_SCHEDULER,
    DEFAULT_SHIFT,
    FlowScheduler,
    make_scheduler,
    scheduler_shift,
    split_scheduler_settings,
    with_shift,
)
from more4d.scene import Scene4D
from more4d.surface_smoothing import check_surface_smoothing, smooth_depth_over_surfaces, smooth_over_surfaces

BUCKET_MULTIPLE = 16  # VAE (8) x patch (2)
MAX_FRAMES = 257
MAX_STEPS = 1000
# what `__call__` uses when an argument is not given; presets override them (`Preset.strag_defaults`, whose
# "scheduler" and "shift" choose the pipeline's scheduler instead)
DEFAULTS = dict(num_frames=17, num_inference_steps=10, guidance_scale=4.0, surface_smoothing=0)


def preset_defaults(preset: str) -> dict[str, Any]:
    """The STraG settings of a weights preset: `DEFAULTS` and the default scheduler and shift, updated by
    `Preset.strag_defaults` (no model is loaded)."""
    from more4d.weights import get_preset

    return {**DEFAULTS, "scheduler": DEFAULT_SCHEDULER, "shift": DEFAULT_SHIFT, **get_preset(preset).strag_defaults}


# 1) inputs -------------------------------------------------------------------------------------------------------

def check_prompt(prompt: Any, name: str = "prompt", allow_empty: bool = False) -> str:
    """Return `prompt` as clean text; raise `InputError` for non-text, non-UTF-8, empty or huge prompts."""
    try:
        (prompt,) = check_prompts([prompt])
    except InputError as exc:
        raise InputError(f"`{name}`: {exc}") from None
    prompt = prompt.strip()
    if not prompt and not allow_empty:
        raise InputError(f"`{name}` is empty: describe the motion, e.g. 'a dog runs to the left'")
    return prompt


def check_num_frames(num_frames: Any) -> int:
    """Frame counts are 4k+1 (Wan VAE): 5, 9, ..., 49, ..., up to `MAX_FRAMES`."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)):
        raise InputError(f"`num_frames` must be an integer 4k+1, got {num_frames!r}")
    if num_frames < 5 or (num_frames - 1) % 4 or num_frames > MAX_FRAMES:
        raise InputError(f"`num_frames` must be 4k+1 between 5 and {MAX_FRAMES} (5, 9, 13, 17, ..., 49), "
                         f"got {num_frames}")
    return int(num_frames)


def bucket_size(height: int, width: int, area: int, multiple: int = BUCKET_MULTIPLE) -> tuple[int, int]:
    """Output size `(h, w)`: multiples of `multiple`, about `area` pixels, aspect ratio close to `height/width`."""
    scale = math.sqrt(area / (height * width))
    h = max(multiple, round(height * scale / multiple) * multiple)
    w = max(multiple, round(width * scale / multiple) * multiple)
    return h, w


def center_crop_box(src_hw: Sequence[int], dst_hw: Sequence[int]) -> tuple[int, int, int, int]:
    """The centred crop `(top, left, height, width)` of `src_hw` with the aspect ratio of `dst_hw`."""
    (sh, sw), (dh, dw) = src_hw, dst_hw
    if sw * dh > sh * dw:  # source wider: crop width
        ch, cw = sh, max(1, min(sw, round(sh * dw / dh)))
    else:
        ch, cw = max(1, min(sh, round(sw * dh / dw))), sw
    return (sh - ch) // 2, (sw - cw) // 2, ch, cw


def crop_resize(x: torch.Tensor, crop: Sequence[int], size: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """Crop `(top, left, h, w)` then resize an image `(H, W, C)` or map `(H, W)` to `size` (antialiased bilinear
    for images, nearest for depth maps)."""
    top, left, ch, cw = crop
    x = x[top:top + ch, left:left + cw]
    if tuple(x.shape[:2]) == tuple(size):
        return x.contiguous()
    if mode == "nearest":
        return resize_depth(x, tuple(size))
    y = F.interpolate(x.permute(2, 0, 1)[None].float(), size=tuple(size), mode="bilinear", antialias=True,
                      align_corners=False)
    return y[0].permute(1, 2, 0).clamp(0, 1).contiguous()


def depth_condition(depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Depth `(H, W)` -> `(H, W)` in [-1, 1] by min-max over valid pixels (invalid pixels -> 1, the far end)."""
    z = depth[valid]
    lo, hi = z.min(), z.max()
    d = (depth - lo) / (hi - lo).clamp(min=1e-6) * 2.0 - 1.0
    return torch.where(valid, d, torch.ones_like(d)).clamp(-1, 1)


@torch.no_grad()
def encode_conditions(vae: torch.nn.Module, images: torch.Tensor, depth: torch.Tensor,
                      num_frames: int) -> torch.Tensor:
    """Condition latents `(B, 48, F, h/8, w/8)` = [image video | start slot zeros | depth video].

    images `(B, H, W, 3)` in [0, 1], depth `(B, H, W)` metres; each video is its frame repeated `num_frames` times
    (the depth min-max normalised to [-1, 1], 3 channels), encoded by the frozen RGB Wan VAE `vae` (at full scale
    the Wan2.1 VAE that the motion VAE wraps; at tiny scale `vae/`, since the tiny motion VAE, trained on motion,
    does not keep colours). Used by the pipeline (B = 1) and by train/train_strag.py (batched).
    """
    valid = valid_depth_mask(depth)
    d = torch.stack([depth_condition(depth[b], valid[b]) for b in range(len(depth))])[..., None].expand(-1, -1, -1, 3)
    frames = torch.cat([images * 2.0 - 1.0, d], dim=0)  # (2B, H, W, 3) in [-1, 1]
    video = frames.permute(0, 3, 1, 2)[:, :, None].expand(-1, -1, num_frames, -1, -1)
    z = wan_encode(vae, video)
    B = len(images)
    return torch.cat([z[:B], torch.zeros_like(z[:B]), z[B:]], dim=1)


class STraGPipeline(StagePipeline):
    """Image + prompt -> Scene4D with the 4D-STraG trajectory generator.

    Components: `tokenizer`, `text_encoder`, `vae` (the RGB Wan VAE: encodes the image and depth conditions),
    `motion_vae` (MotionVAE: decodes motion), `transformer` (STraGTransformer), `motion_encoder` (MPM feature
    extractor), `scheduler` (flow matching: FlowMatch Euler or UniPC), and optionally `image_encoder` (CLIP vision,
    needed only when the transformer has image cross-attention, as the 14B I2V/Control base does) and
    `depth_estimator` (any `DepthEstimator`; `save_pretrained` keeps it when it is a diffusers model, as the tiny one
    is; without one, callers pass `depth=`). Config: `resolution` (the training size inputs are bucketed to),
    `defaults` (call defaults), `fps`, `preset`, `vae_tiling` (on at full scale).

    >>> pipe = STraGPipeline.from_preset("tiny")
    >>> scene = pipe("photo.jpg", "a dog runs to the left", num_frames=17, seed=0)
    >>> pipe.save_pretrained("my_strag"); STraGPipeline.from_pretrained("my_strag")   # the same scene again
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->vae->motion_encoder->transformer->motion_vae"
    _optional_components = ["scheduler", "image_encoder", "depth_estimator"]
    _exclude_from_cpu_offload = ["depth_estimator"]
    _callback_tensor_inputs = ("latents", "noise_pred", "prompt_embeds", "negative_prompt_embeds")

    def __init__(self, tokenizer: Any, text_encoder: torch.nn.Module, vae: torch.nn.Module,
                 motion_vae: torch.nn.Module, transformer: torch.nn.Module, motion_encoder: torch.nn.Module,
                 scheduler: FlowScheduler | None = None, image_encoder: torch.nn.Module | None = None,
                 depth_estimator: DepthEstimator | None = None,
                 resolution: tuple[int, int] | list[int] = (256, 256), defaults: dict[str, Any] | None = None,
                 fps: float = 8.0, preset: str | None = None, vae_tiling: bool = False) -> None:
        super().__init__()
        scheduler = make_scheduler(DEFAULT_SCHEDULER, DEFAULT_SHIFT) if scheduler is None else scheduler
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, motion_vae=motion_vae,
                              transformer=transformer, motion_encoder=motion_encoder, scheduler=scheduler,
                              image_encoder=image_encoder, depth_estimator=depth_estimator)
        self.register_settings(DEFAULTS, defaults, vae_tiling, resolution=[int(x) for x in resolution], fps=float(fps),
                               preset=preset)
        for module in (vae, motion_vae, transformer, motion_encoder):
            if module is not None:
                use_onednn_conv3d(module)  # CPU only; no effect on CUDA
        # read once: `release_stages` frees the transformer before the motion is decoded
        self._seed_compat = bool(getattr(getattr(transformer, "config", None), "seed_compat", False))

    @property
    def resolution(self) -> tuple[int, int]:
        """`(H, W)` the models were trained at; inputs are bucketed to about this area."""
        return tuple(self.config.resolution)

    @property
    def defaults(self) -> dict[str, Any]:
        """What `__call__` uses for `num_frames`, `num_inference_steps` and `guidance_scale` when not given."""
        return dict(self.config.defaults)

    @property
    def fps(self) -> float:
        return float(self.config.fps)

    @property
    def preset(self) -> str | None:
        """The weights preset the pipeline was built from (recorded in each scene's metadata)."""
        return self.config.preset

    @property
    def seed_compat(self) -> bool:
        """Weights converted from the authors' checkpoints use their motion normalisation constants."""
        return self._seed_compat

    @classmethod
    def from_preset(cls, preset: str = "tiny", weights_dir: str | os.PathLike | None = None,
                    device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None) -> STraGPipeline:
        """Build from a weights preset ("tiny" | "moge4d" | "wan2.1-14b"); see `more4d.weights`."""
        from more4d.weights import get_preset, load_components

        spec = get_preset(preset)
        comps = load_components(preset, weights_dir, device=device, dtype=dtype, only=STRAG_COMPONENTS)
        if comps["transformer"].config.image_dim:
            comps["image_encoder"] = load_components(preset, weights_dir, device=device, dtype=dtype,
                                                     only=("vism_image_encoder",))["vism_image_encoder"]
        defaults, scheduler = split_scheduler_settings(spec.strag_defaults)
        return cls(depth_estimator=comps.pop("depth"), scheduler=scheduler, resolution=spec.resolution,
                   defaults=defaults, fps=spec.fps, preset=spec.name, vae_tiling=spec.vae_tiling, **comps)

    # -- memory options ------------------------------------------------------------------------------------------
    def enable_vae_tiling(self) -> None:
        """Encode the conditions and decode the motion in spatial tiles (lower peak memory at large sizes); saved
        with the pipeline."""
        for vae in (self.vae, self.motion_vae.vae):
            vae.enable_tiling()
        self.register_to_config(vae_tiling=True)

    def enable_vae_slicing(self) -> None:
        """Run the VAEs one batch element at a time (the two conditions are encoded as a batch of 2)."""
        for vae in (self.vae, self.motion_vae.vae):
            vae.enable_slicing()

    # -- stages --------------------------------------------------------------------------------------------------
    def prepare_image(self, image: Any, depth: Any = None, resolution: tuple[int, int] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Load, depth-estimate and bucket the input.

        Returns image `(h, w, 3)` in [0, 1], depth `(h, w)` metres (0 = invalid), K `(3, 3)` for `(h, w)`, and
        provenance (source size, crop, depth source).
        """
        img0 = load_image(image)
        src_hw = tuple(img0.shape[:2])
        if depth is not None:
            estimator, depth_source = (depth if callable(depth) else GivenDepth(depth)), "given"
        elif self.depth_estimator is not None:
            estimator, depth_source = self.depth_estimator, type(self.depth_estimator).__name__
        else:
            raise InputError("this pipeline has no depth model: pass `depth=` (an (H, W) metric depth map)")
        pred = estimator(img0)
        if tuple(pred.depth.shape) != src_hw:
            raise InputError(f"depth estimator returned a {tuple(pred.depth.shape)} map for a {src_hw} image")
        K0 = pred.K if pred.K is not None else intrinsics_from_fov(DEFAULT_FOV_DEG, *src_hw)
        rh, rw = self.resolution if resolution is None else resolution
        size = bucket_size(*src_hw, area=rh * rw)
        crop = center_crop_box(src_hw, size)
        img = crop_resize(img0, crop, size)
        dep = crop_resize(pred.depth.float().cpu(), crop, size, mode="nearest")
        dep = torch.where(valid_depth_mask(dep), dep, torch.zeros_like(dep))
        if not valid_depth_mask(dep).any():
            raise InputError("depth map has no valid pixel (finite and > 0) inside the image crop")
        K = resize_intrinsics(K0.float().cpu(), src_hw, size, crop=crop)
        info = dict(source_size=list(src_hw), crop=list(crop), depth_source=depth_source,
                    intrinsics_source="depth model" if pred.K is not None else f"default fov {DEFAULT_FOV_DEG}")
        return img, dep, K, info

    def encode_text(self, prompts: list[str], device: torch.device) -> torch.Tensor:
        """Text tokens `(B, L, text_dim)` for the transformer's cross-attention."""
        return encode_prompt(self.tokenizer, self.text_encoder, prompts, device=device)

    def encode_conditions(self, image: torch.Tensor, depth: torch.Tensor, num_frames: int,
                          device: torch.device) -> torch.Tensor:
        """The 48 condition channels `(1, 48, F, h/8, w/8)`: [image video | start slot zeros | depth video]."""
        return encode_conditions(self.vae, image[None], depth[None], num_frames).to(device)

    def image_tokens(self, image: torch.Tensor, device: torch.device) -> torch.Tensor | None:
        """CLIP tokens `(1, L, image_dim)` of the input image when the transformer cross-attends to them."""
        if not self.transformer.config.image_dim:
            return None
        if self.image_encoder is None:
            raise InputError("this transformer needs CLIP image tokens but the pipeline has no `image_encoder`")
        from more4d.models.vism import encode_clip_image

        return encode_clip_image(self.image_encoder, image[None].to(device))

    def motion_features(self, image: torch.Tensor, device: torch.device) -> torch.Tensor:
        """MPM features of the input image (the transformer's adapter maps them to its token grid)."""
        param = next(self.motion_encoder.parameters())
        x = image.permute(2, 0, 1)[None].to(device=device, dtype=param.dtype)
        return self.motion_encoder(x)

    def decode_scene(self, latents: torch.Tensor, image: torch.Tensor, depth: torch.Tensor, K: torch.Tensor,
                     prompt: str, metadata: dict[str, Any], surface_smoothing: int = 0) -> Scene4D:
        """Motion latents `(1, 16, F, h/8, w/8)` -> Scene4D (decode, `surface_smoothing` iterations of
        `smooth_over_surfaces`, inverse normalisation with z0)."""
        h, w = image.shape[:2]
        m = self.motion_vae.decode_motion(latents.to(self.motion_vae.dtype))[0].float().cpu()  # (3, T, h, w)
        m = smooth_over_surfaces(m, depth, surface_smoothing)
        motion = video_to_motion(m)  # (T, h*w, 3)
        motion[0] = 0.0  # frame 0 is the input by definition
        points0 = backproject_depth(depth, K)
        valid = valid_depth_mask(depth).reshape(-1)
        points = denormalize_motion(motion, points0, motion_alphas(K, (h, w), seed_compat=self.seed_compat))
        points = torch.nan_to_num(points, nan=0.0, posinf=0.0, neginf=0.0)
        T = points.shape[0]
        return Scene4D(points=points.contiguous(), colors=image.reshape(-1, 3).float().contiguous(),
                       visibility=valid[None].expand(T, -1).clone(), K=K.float(), image_size=(int(h), int(w)),
                       fps=self.fps, prompt=prompt, metadata=metadata)

    def denoise(
        self,
        latents: torch.Tensor,
        conditions: torch.Tensor,
        prompt_embeds: torch.Tensor,
        negative_prompt_embeds: torch.Tensor | None = None,
        *,
        num_inference_steps: int,
        scheduler: FlowScheduler | None = None,
        guidance_scale: float = 1.0,
        motion_features: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        ref_latents: torch.Tensor | None = None,
        on_step: Callable[..., torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The flow-matching loop: velocity prediction, CFG on the text (conditions shared by both branches).

        Args:
            latents: `(1, 16, t, h, w)` initial noise. conditions: `(1, 48, t, h, w)` from `encode_conditions`.
            prompt_embeds / negative_prompt_embeds: `(1, L, text_dim)`; the negative is used when
                `guidance_scale > 1` (noise_pred = uncond + g (text - uncond)).
            motion_features: `(1, C, hf, wf)` MPM features or None (MPM off). image_embeds: `(1, 257, D)` CLIP
                tokens when the transformer has image cross-attention. ref_latents: `(1, 16, h, w)` seed-compat
                reference latent (None: zeros, as the authors' trainer feeds it).
            scheduler: default `self.scheduler`.
            on_step: `fn(i, t, latents, noise_pred, x0, last) -> latents` after every step.
        Returns:
            (latents, the last clean estimate x0, steps done); stops early when `self.interrupt` is set.
        """
        do_cfg = guidance_scale > 1.0
        if do_cfg and negative_prompt_embeds is None:
            raise InputError("`negative_prompt_embeds` is required when `guidance_scale` > 1")
        tdtype = self.transformer.dtype
        batch = 2 if do_cfg else 1
        embeds = torch.cat([prompt_embeds, negative_prompt_embeds]) if do_cfg else prompt_embeds
        embeds = embeds.to(latents.device, tdtype)
        cond = conditions.to(latents.device, tdtype).expand(batch, -1, -1, -1, -1)

        def shared(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.to(latents.device, tdtype).expand(batch, *x.shape[1:])

        features, clip, ref = shared(motion_features), shared(image_embeds), shared(ref_latents)
        scheduler = self.scheduler if scheduler is None else scheduler
        scheduler.set_timesteps(num_inference_steps, device=latents.device)
        timesteps = scheduler.timesteps
        x0, steps_done = latents, 0
        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    break
                sigma = scheduler.sigmas[scheduler.step_index if scheduler.step_index is not None else i]
                x = latents.expand(batch, -1, -1, -1, -1)
                x = torch.cat([x.to(tdtype), cond], dim=1)
                extra = {} if ref is None else {"ref_latents": ref}
                out = self.transformer(hidden_states=x, timestep=t.expand(batch), encoder_hidden_states=embeds,
                                       motion_features=features, encoder_hidden_states_image=clip,
                                       return_dict=False, **extra)[0].float()
                noise_pred = out[1:] + guidance_scale * (out[:1] - out[1:]) if do_cfg else out  # [cond, uncond]
                x0 = latents - sigma.to(latents) * noise_pred  # clean estimate (velocity = noise - x0)
                latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
                if on_step is not None:
                    latents = on_step(i, t, latents, noise_pred, x0, i + 1 == len(timesteps))
                steps_done += 1
                bar.update()
        return latents, x0, steps_done

    # -- main entry ----------------------------------------------------------------------------------------------
    def check_inputs(self, prompt: Any, negative_prompt: Any, prompt_embeds: torch.Tensor | None,
                     negative_prompt_embeds: torch.Tensor | None, num_frames: Any, num_inference_steps: Any,
                     guidance_scale: Any, shift: Any, resolution: Any, preview_every: Any,
                     callback_on_step_end_tensor_inputs: Sequence[str], surface_smoothing: Any = 0) -> None:
        """Raise `InputError` for any argument of `__call__` out of range (the CLI and the app call the same rules)."""
        if (prompt is None) == (prompt_embeds is None):
            raise InputError("pass exactly one of `prompt` and `prompt_embeds`")
        if prompt is not None:
            check_prompt(prompt)
        check_prompt(negative_prompt, "negative_prompt", allow_empty=True)
        for name, embeds in (("prompt_embeds", prompt_embeds), ("negative_prompt_embeds", negative_prompt_embeds)):
            if embeds is not None and (not isinstance(embeds, torch.Tensor) or embeds.ndim != 3 or len(embeds) != 1):
                raise InputError(f"`{name}` must be a tensor (1, L, text_dim), got "
                                 f"{tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__}")
        check_num_frames(num_frames)
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
                or not 1 <= num_inference_steps <= MAX_STEPS:
            raise InputError(f"`num_inference_steps` must be an integer in [1, {MAX_STEPS}], got {num_inference_steps!r}")
        if not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise InputError(f"`guidance_scale` must be a finite number >= 0, got {guidance_scale!r}")
        if shift is not None and (not isinstance(shift, (int, float)) or not math.isfinite(shift) or shift <= 0):
            raise InputError(f"`shift` must be a finite number > 0, got {shift!r}")
        if resolution is not None and (len(resolution) != 2 or min(resolution) < BUCKET_MULTIPLE):
            raise InputError(f"`resolution` must be (H, W) with sides >= {BUCKET_MULTIPLE}, got {resolution!r}")
        check_surface_smoothing(surface_smoothing)
        if preview_every is not None and (not isinstance(preview_every, int) or preview_every < 1):
            raise InputError(f"`preview_every` must be a positive int or None, got {preview_every!r}")
        bad = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if bad:
            raise InputError(f"`callback_on_step_end_tensor_inputs` must be among {self._callback_tensor_inputs}, "
                             f"got {sorted(bad)}")
        missing = [n for n in ("vae", "transformer", "motion_vae", "motion_encoder", "scheduler")
                   if getattr(self, n) is None]
        if missing:
            raise InputError(f"this pipeline has no {', '.join(missing)} (released by `release`?); build a new one")

    def encode_prompt(self, prompt: str | None, negative_prompt: str, do_classifier_free_guidance: bool,
                      device: torch.device, prompt_embeds: torch.Tensor | None = None,
                      negative_prompt_embeds: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(prompt_embeds, negative_prompt_embeds)`, each `(1, L, text_dim)`; given embeddings are used as they
        are, the others encoded (together, in one batch). The negative is None without guidance."""
        texts = []
        if prompt_embeds is None:
            texts.append(prompt)
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            texts.append(negative_prompt)
        if texts:
            if self.text_encoder is None or self.tokenizer is None:
                raise InputError("this pipeline has no text encoder: pass `prompt_embeds` (and "
                                 "`negative_prompt_embeds` with guidance)")
            encoded = list(self.encode_text(texts, device).split(1))
            prompt_embeds = encoded.pop(0) if prompt_embeds is None else prompt_embeds
            if do_classifier_free_guidance and negative_prompt_embeds is None:
                negative_prompt_embeds = encoded.pop(0)
        return prompt_embeds.to(device), (negative_prompt_embeds.to(device) if do_classifier_free_guidance else None)

    def prepare_latents(self, num_frames: int, height: int, width: int, device: torch.device,
                        generator: torch.Generator | None = None, latents: torch.Tensor | None = None
                        ) -> torch.Tensor:
        """Initial noise `(1, 16, (num_frames - 1) / 4 + 1, height / 8, width / 8)` float32 on `device`, drawn on
        the CPU (the same seed gives the same scene on any device); given `latents` are checked and used."""
        shape = (1, LATENT_CHANNELS, (num_frames - 1) // 4 + 1, height // 8, width // 8)
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise InputError(f"`latents` must have shape {shape} for {num_frames} frames at {height}x{width}, "
                                 f"got {tuple(latents.shape)}")
            return latents.to(device=device, dtype=torch.float32)
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)

    @torch.no_grad()
    def __call__(
        self,
        image: Any,
        prompt: str | None = None,
        negative_prompt: str = "",
        num_frames: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        shift: float | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        depth: Any = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        callback_on_step_end: Callable[[STraGPipeline, int, torch.Tensor, dict], dict | None] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        preview_every: int | None = None,
        resolution: tuple[int, int] | None = None,
        release_stages: bool = False,
        surface_smoothing: int | None = None,
    ) -> Scene4D:
        """Generate a Scene4D.

        Args:
            image: path, PIL image, array or tensor `(H, W, 3)`; any size (bucketed to ~the model's resolution,
                multiples of 16, centre-cropped; K follows).
            prompt / negative_prompt: motion description / what to avoid (CFG; ignored when guidance <= 1).
            num_frames: 4k+1 frames. num_inference_steps, guidance_scale: default to `self.defaults`.
            shift: the scheduler's timestep shift for this call (default: `self.scheduler`'s own).
            generator / seed: noise source (a CPU generator; `seed` is shorthand; default seed 0).
            depth: optional metric depth `(H, W)` of the input image (array, tensor, `.npy` path) or a
                `DepthEstimator`; default: `self.depth_estimator`.
            latents: initial noise `(1, 16, (num_frames - 1) / 4 + 1, h / 8, w / 8)` for the bucketed size
                (default: drawn from `generator`).
            prompt_embeds / negative_prompt_embeds: `(1, L, text_dim)` text embeddings in place of `prompt` /
                `negative_prompt` (see `encode_prompt`).
            callback_on_step_end: `fn(pipe, step, timestep, callback_kwargs) -> dict | None`, called after every
                step; kwargs hold the tensors named in `callback_on_step_end_tensor_inputs` (whitelist
                `_callback_tensor_inputs`) and, every `preview_every` steps, "preview": a Scene4D decoded from the
                current clean estimate. Returned "latents" replace the current ones. Set `pipe._interrupt = True`
                to stop early (the last clean estimate is decoded; metadata["interrupted"] is True).
            resolution: `(H, W)` whose area sets the bucket (default: the model's training resolution).
            release_stages: free each stage's models as soon as they are done (depth, text/image/motion
                encoders before denoising, the transformer before decoding): lowest peak memory for a one-shot
                run; the pipeline cannot be called again afterwards.
            surface_smoothing: iterations of `more4d.surface_smoothing.smooth_over_surfaces`, on the bucketed
                log depth when the pipeline estimates it (steps of a few percent inside one surface would open
                holes in other views) and on the decoded motion (so that no surface tears where the model's moving
                region ends inside it); default `self.defaults`: 100 for the tiny model, 0 at full scale.
        """
        # 1. check inputs
        d = self.defaults
        num_frames = d["num_frames"] if num_frames is None else num_frames
        num_inference_steps = d["num_inference_steps"] if num_inference_steps is None else num_inference_steps
        guidance_scale = d["guidance_scale"] if guidance_scale is None else guidance_scale
        surface_smoothing = d["surface_smoothing"] if surface_smoothing is None else surface_smoothing
        self.check_inputs(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_frames,
                          num_inference_steps, guidance_scale, shift, resolution, preview_every,
                          callback_on_step_end_tensor_inputs, surface_smoothing)
        prompt = "" if prompt is None else check_prompt(prompt)
        negative_prompt = check_prompt(negative_prompt, "negative_prompt", allow_empty=True)
        guidance_scale = float(guidance_scale)
        scheduler = with_shift(self.scheduler, shift)
        if generator is None:
            seed = 0 if seed is None else int(seed)
            generator = torch.Generator("cpu").manual_seed(seed)
        do_cfg = guidance_scale > 1.0
        device = self._execution_device
        self._interrupt = False

        # 2. image -> depth + K (bucketed); an estimated depth's surfaces smoothed, a given one used as given
        image_t, depth_t, K, info = self.prepare_image(image, depth, resolution)
        if depth is None:
            depth_t = smooth_depth_over_surfaces(depth_t, surface_smoothing)
        h, w = image_t.shape[:2]

        # 3. text, conditions, MPM features
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, negative_prompt, do_cfg, device, prompt_embeds, negative_prompt_embeds)
        cond = self.encode_conditions(image_t, depth_t, num_frames, device)
        features = self.motion_features(image_t, device)
        clip = self.image_tokens(image_t, device)
        if release_stages:
            self.release("depth_estimator", "text_encoder", "image_encoder", "vae", "motion_encoder")

        # 4. noise
        latents = self.prepare_latents(num_frames, h, w, device, generator, latents)

        # 5. denoise
        def on_step(i: int, t: torch.Tensor, latents: torch.Tensor, noise_pred: torch.Tensor,
                    x0: torch.Tensor, last: bool) -> torch.Tensor:
            if callback_on_step_end is None:
                return latents
            local = dict(latents=latents, noise_pred=noise_pred, prompt_embeds=prompt_embeds,
                         negative_prompt_embeds=negative_prompt_embeds)
            kwargs = {k: local[k] for k in callback_on_step_end_tensor_inputs}
            if preview_every and ((i + 1) % preview_every == 0 or last):
                kwargs["preview"] = self.decode_scene(x0, image_t, depth_t, K, prompt, {"preview_step": i + 1},
                                                      surface_smoothing)
            result = callback_on_step_end(self, i, t, kwargs) or {}
            return result.get("latents", latents)

        latents, x0, steps_done = self.denoise(
            latents, cond, prompt_embeds, negative_prompt_embeds, scheduler=scheduler,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, motion_features=features,
            image_embeds=clip, on_step=on_step,
        )

        # 6. decode -> Scene4D
        if release_stages:
            self.release("transformer")
        final = x0 if self.interrupt else latents
        metadata = dict(
            model="more4d.STraGPipeline", preset=self.preset, prompt=prompt, negative_prompt=negative_prompt,
            num_frames=num_frames, num_inference_steps=int(num_inference_steps), steps_done=steps_done,
            guidance_scale=guidance_scale, shift=scheduler_shift(scheduler), scheduler=type(scheduler).__name__,
            seed=seed, cfg=do_cfg, seed_compat=self.seed_compat, interrupted=self.interrupt,
            surface_smoothing=surface_smoothing,
            visibility="valid frame-0 depth (the model predicts no visibility)", **info,
        )
        scene = self.decode_scene(final, image_t, depth_t, K, prompt, metadata, surface_smoothing)
        self.maybe_free_model_hooks()
        return scene


STRAG_COMPONENTS = ("tokenizer", "text_encoder", "vae", "motion_vae", "transformer", "motion_encoder", "depth")
# and "vism_image_encoder" (shared CLIP) when the transformer has image cross-attention
