"""ViSMPipeline: render a Scene4D along a camera path and inpaint the disocclusions (docs/method.md, "4D-ViSM").

>>> pipe = ViSMPipeline(transformer=..., vae=..., scheduler=..., text_encoder=..., tokenizer=..., image_encoder=...)
>>> out = pipe(scene, "orbit", num_inference_steps=50, guidance_scale=6.0, generator=torch.Generator().manual_seed(0))
>>> out.frames.shape, out.render.shape, out.mask.shape   # (B, T, H, W, 3), (B, T, H, W, 3), (B, T, H, W)
>>> ViSMPipeline()(scene, "dolly", render_only=True)      # the splat render alone, no model needed
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from more4d.camera import PRESET_NAMES, CameraPath, CameraTrajectory, Keyframe, make_preset
from more4d.errors import InputError
from more4d.geometry import fov_from_intrinsics
from more4d.models.text_encoder import encode_prompt
from more4d.models.vism import LATENT_CHANNELS, TEXT_CONTEXT_LEN, encode_clip_image
from more4d.pipelines.base import StagePipeline
from more4d.pipelines.cpu_speedups import use_onednn_conv3d
from more4d.pipelines.schedulers import DEFAULT_SHIFT, FlowScheduler, split_scheduler_settings, with_shift
from more4d.pipelines.vism_conditioning import (
    VAE_SCALE,
    ViSMCondition,
    check_output_size,
    composite_frames,
    encode_condition,
    fill_holes,
    latent_num_frames,
    render_views,
    vae_decode,
)
from more4d.scene import Scene4D

logger = logging.getLogger(__name__)

CameraLike = str | CameraPath | CameraTrajectory
VISM_COMPONENTS = ("vae", "vism_transformer", "vism_image_encoder", "tokenizer", "text_encoder")
Inpaint = Literal["model", "pushpull"]
INPAINT_MODES = ("model", "pushpull")
# what `__call__` uses when an argument is not given; presets override them (`Preset.vism_defaults`, whose "shift"
# sets the scheduler's). `inpaint`: what fills the holes, the diffusion model or a pixel-space push-pull fill
# (`fill_holes`, no model); `composite`: keep the render's pixels and take only the holes from the model (off: the
# model regenerates the whole frame, as the paper does)
DEFAULTS = dict(num_inference_steps=50, guidance_scale=6.0, inpaint="model", composite=False)


def preset_defaults(preset: str) -> dict[str, Any]:
    """The ViSM settings of a weights preset: `DEFAULTS` and the shift, updated by `Preset.vism_defaults` (no model
    is loaded)."""
    from more4d.weights import get_preset

    return {**DEFAULTS, "shift": DEFAULT_SHIFT, **get_preset(preset).vism_defaults}


@dataclass
class ViSMOutput(BaseOutput):
    """frames: `(B, T, H, W, 3)` float [0, 1] (the inpainted video; the render itself when render_only);
    render: `(B, T, H, W, 3)` float [0, 1] splat render; mask: `(B, T, H, W)` bool, True at holes; fps."""

    frames: np.ndarray | torch.Tensor
    render: np.ndarray | torch.Tensor
    mask: np.ndarray | torch.Tensor
    fps: float


def resolve_camera(camera: CameraLike, scene: Scene4D) -> CameraTrajectory:
    """One camera per scene frame from a preset name, a CameraPath or a CameraTrajectory.

    A trajectory of another length is resampled along a spline through its cameras (a 1-frame trajectory is held
    still); the path spans the same time as before.
    """
    T = scene.num_frames
    if isinstance(camera, str):
        if camera not in PRESET_NAMES:
            raise InputError(f"camera preset must be one of {', '.join(PRESET_NAMES)}, got {camera!r}")
        fov = fov_from_intrinsics(scene.K.cpu(), scene.height)
        camera = make_preset(camera, num_frames=T, scene_depth=scene.centroid_depth(), fov_deg=fov, fps=scene.fps)
    if isinstance(camera, CameraPath):
        return camera.sample(T)
    if not isinstance(camera, CameraTrajectory):
        raise InputError(f"camera must be a preset name, CameraPath or CameraTrajectory, got {type(camera).__name__}")
    F = len(camera)
    if F == T:
        return camera
    c2w = camera.c2w.detach().cpu().double()
    if not torch.isfinite(c2w).all() or not torch.isfinite(camera.fov_deg).all():
        raise InputError("camera trajectory has NaN or infinite poses/FOV; cannot resample it "
                         f"from {F} to the scene's {T} frames")
    if F == 1:
        return CameraTrajectory(camera.c2w.expand(T, 4, 4).clone(), camera.fov_deg.expand(T).clone(),
                                torch.arange(T, dtype=torch.float32) / scene.fps)
    times = camera.times.detach().cpu().double()
    if not bool((times[1:] > times[:-1]).all()):
        times = torch.arange(F, dtype=torch.float64) / scene.fps
    keys = [Keyframe(c2w[i].numpy(), float(camera.fov_deg[i]), float(times[i])) for i in range(F)]
    logger.info("resampling a %d-frame camera trajectory to the scene's %d frames", F, T)
    return CameraPath(keys, fps=scene.fps).sample(T)


def scene_image(scene: Scene4D) -> torch.Tensor:
    """The input image as `(H, W, 3)` float [0, 1]: frame-0 colours in row-major pixel order."""
    return scene.colors.reshape(scene.height, scene.width, 3).float()


class ViSMPipeline(StagePipeline):
    """Scene4D + camera path(s) + prompt -> inpainted novel-view video(s), raw render and hole mask.

    Components (all optional for `render_only=True`): `transformer` (36-channel Wan-Fun-InP DiT), `vae`
    (AutoencoderKLWan), `scheduler` (flow matching), `text_encoder` + `tokenizer`, `image_encoder` (CLIPVisionModel).
    Memory options are diffusers': `enable_model_cpu_offload()`, `enable_sequential_cpu_offload()`,
    `vae.enable_tiling()`, `transformer.enable_layerwise_casting(...)`.
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->transformer->vae"
    _callback_tensor_inputs = ("latents", "prompt_embeds", "negative_prompt_embeds")
    _optional_components = ["transformer", "vae", "scheduler", "text_encoder", "tokenizer", "image_encoder"]

    def __init__(self, transformer: torch.nn.Module | None = None, vae: torch.nn.Module | None = None,
                 scheduler: FlowScheduler | None = None, text_encoder: torch.nn.Module | None = None,
                 tokenizer: Any = None, image_encoder: torch.nn.Module | None = None,
                 defaults: dict[str, Any] | None = None, preset: str | None = None, vae_tiling: bool = False) -> None:
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler, text_encoder=text_encoder,
                              tokenizer=tokenizer, image_encoder=image_encoder)
        self.register_settings(DEFAULTS, defaults, vae_tiling, preset=preset)
        for module in (vae, transformer):
            if module is not None:
                use_onednn_conv3d(module)  # CPU inference only; no effect on CUDA or with gradients

    @property
    def defaults(self) -> dict[str, Any]:
        """What `__call__` uses for steps, guidance, `inpaint` and `composite` when not given."""
        return dict(self.config.defaults)

    @property
    def preset(self) -> str | None:
        return self.config.preset

    @classmethod
    def from_preset(cls, preset: str = "tiny", weights_dir: str | os.PathLike | None = None,
                    device: str | torch.device | None = "cpu", dtype: str | torch.dtype | None = None, *,
                    text_encoder: torch.nn.Module | None = None, tokenizer: Any = None,
                    lora_weight: float = 0.55) -> ViSMPipeline:
        """Build from a weights preset ("tiny" | "moge4d" | "wan2.1-14b"; see `more4d.weights`).

        A text encoder/tokenizer already loaded (e.g. by the STraG stage) can be passed to share it. The preset's LoRA
        file (`Preset.vism_lora`, more4d or the authors' kohya format), when present, is merged at `lora_weight`.
        """
        from more4d.models.lora import fuse_lora, load_lora
        from more4d.weights import get_preset, load_components
        from more4d.weights.presets import weights_folder

        spec = get_preset(preset)
        only = [c for c in VISM_COMPONENTS if not (c == "text_encoder" and text_encoder is not None)
                and not (c == "tokenizer" and tokenizer is not None)]
        comps = load_components(preset, weights_dir, device=device, dtype=dtype, only=only)
        lora = weights_folder(spec, weights_dir) / spec.vism_lora if spec.vism_lora else None
        if lora is not None and lora.is_file():
            load_lora(comps["vism_transformer"], lora)
            fuse_lora(comps["vism_transformer"], lora_weight)
        defaults, scheduler = split_scheduler_settings(preset_defaults(spec.name))
        return cls(transformer=comps["vism_transformer"], vae=comps["vae"], image_encoder=comps["vism_image_encoder"],
                   text_encoder=text_encoder or comps["text_encoder"], tokenizer=tokenizer or comps["tokenizer"],
                   scheduler=scheduler, defaults=defaults,
                   preset=spec.name, vae_tiling=spec.vae_tiling)

    # -- memory options ------------------------------------------------------------------------------------------
    def enable_vae_tiling(self) -> None:
        """Encode/decode the VAE in spatial tiles (lower peak memory at large sizes); saved with the pipeline."""
        if self.vae is not None:
            self.vae.enable_tiling()
        self.register_to_config(vae_tiling=True)

    def encode_text(self, prompts: list[str], device: torch.device) -> torch.Tensor:
        """Text embeddings `(B, 512, text_dim)`: the encoder's tokens (padding zeroed), zero-padded to 512
        (diffusers' Wan attention splits image from text tokens at 512 from the end)."""
        hidden = encode_prompt(self.tokenizer, self.text_encoder, prompts, device=device)[:, :TEXT_CONTEXT_LEN]
        return F.pad(hidden, (0, 0, 0, TEXT_CONTEXT_LEN - hidden.shape[1]))

    def encode_prompt(self, prompt: str, negative_prompt: str, do_classifier_free_guidance: bool, batch_size: int,
                      device: torch.device, prompt_embeds: torch.Tensor | None = None,
                      negative_prompt_embeds: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(prompt_embeds, negative_prompt_embeds)`, each `(batch_size, 512, text_dim)`; given embeddings
        (`(1 or batch_size, 512, text_dim)`) are used as they are, the others encoded. The negative is None without
        guidance."""
        def batched(embeds: torch.Tensor | None, text: str, name: str) -> torch.Tensor:
            if embeds is None:
                if self.text_encoder is None or self.tokenizer is None:
                    raise InputError(f"this pipeline has no text encoder: pass `{name}`")
                return self.encode_text([text], device).expand(batch_size, -1, -1)
            if embeds.ndim != 3 or len(embeds) not in (1, batch_size) or embeds.shape[1] != TEXT_CONTEXT_LEN:
                raise InputError(f"`{name}` must be (1 or {batch_size}, {TEXT_CONTEXT_LEN}, text_dim), "
                                 f"got {tuple(embeds.shape)}")
            return embeds.to(device).expand(batch_size, -1, -1)

        positive = batched(prompt_embeds, prompt, "prompt_embeds")
        negative = batched(negative_prompt_embeds, negative_prompt, "negative_prompt_embeds") \
            if do_classifier_free_guidance else None
        return positive, negative

    def prepare_latents(self, shape: Sequence[int], device: torch.device, generator: torch.Generator | None = None,
                        latents: torch.Tensor | None = None) -> torch.Tensor:
        """Initial noise of `shape` `(B, 16, t, h, w)` float32 on `device`; given `latents` are checked and used."""
        shape = tuple(shape)
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise InputError(f"`latents` must have shape {shape}, got {tuple(latents.shape)}")
            return latents.to(device=device, dtype=torch.float32)
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)

    def check_inputs(self, scene: Scene4D, height: int, width: int, render_only: bool, guidance_scale: float,
                     num_inference_steps: int, callback_on_step_end_tensor_inputs: Sequence[str],
                     output_type: str) -> None:
        """`render_only`: no model runs (a bare render, or holes filled in pixel space)."""
        if output_type not in ("np", "pt"):
            raise InputError(f"output_type must be 'np' or 'pt', got {output_type!r}")
        if not isinstance(scene, Scene4D):
            raise InputError(f"scene must be a Scene4D, got {type(scene).__name__}")
        scene.validate()
        if render_only:
            if height <= 0 or width <= 0:
                raise InputError(f"output size must be positive, got height={height}, width={width}")
            return
        missing = [n for n in ("transformer", "vae", "scheduler", "image_encoder")
                   if getattr(self, n, None) is None]
        if missing:
            raise InputError(f"ViSMPipeline is missing components {missing}; load a model or use render_only=True")
        check_output_size(height, width, multiple=VAE_SCALE * self.transformer.config.patch_size[1])
        latent_num_frames(scene.num_frames)
        if num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if guidance_scale < 0:
            raise InputError(f"guidance_scale must be >= 0, got {guidance_scale}")
        bad = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if bad:
            raise InputError(f"callback_on_step_end_tensor_inputs must be among {self._callback_tensor_inputs}, "
                             f"got {bad}")

    @torch.no_grad()
    def __call__(
        self,
        scene: Scene4D,
        camera: CameraLike | Sequence[CameraLike],
        prompt: str | None = None,
        negative_prompt: str = "",
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        shift: float | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        height: int | None = None,
        width: int | None = None,
        fps: float | None = None,
        render_only: bool = False,
        inpaint: Inpaint | None = None,
        composite: bool | None = None,
        output_type: Literal["np", "pt"] = "np",
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> ViSMOutput:
        """Render `scene` along `camera` (one path, or a list: one video each) and inpaint the holes.

        Args:
            scene: the 4D scene; frame t of the output shows the points at time t.
            camera: preset name (`more4d.camera.PRESET_NAMES`), CameraPath, CameraTrajectory (resampled to the
                scene's frame count if needed), or a list of them (a batch).
            prompt: text prompt (default: the scene's prompt); negative_prompt: for classifier-free guidance.
            num_inference_steps, guidance_scale (CFG on text, off at <= 1): default to `self.defaults` (the
                preset's); shift: the scheduler's timestep shift for this call (default: its own); generator / seed:
                noise source (default seed 0).
            height, width: output size (default: the scene's image size; multiples of 16 for the model).
            fps: frame rate recorded in the output (default: the scene's).
            render_only: skip the model and return the splat render as `frames`.
            inpaint: "model" (4D-ViSM's diffusion model) or "pushpull" (holes filled from their borders in pixel
                space, no model). composite: keep the pixels the render covers and take only the holes from the
                model, with a feathered seam. Both default to the preset's (`self.defaults`).
            latents: initial noise `(B, 16, (T - 1) / 4 + 1, height / 8, width / 8)` (default: drawn).
            prompt_embeds / negative_prompt_embeds: `(1 or B, 512, text_dim)` in place of the prompts.
            callback_on_step_end: `fn(pipe, step, timestep, tensors) -> dict` after each step (may replace latents).
        Returns:
            ViSMOutput(frames, render, mask, fps).
        """
        d = self.defaults
        composite = bool(d["composite"] if composite is None else composite)
        inpaint = d["inpaint"] if inpaint is None else inpaint
        if inpaint not in INPAINT_MODES:
            raise InputError(f"inpaint must be one of {INPAINT_MODES}, got {inpaint!r}")
        num_inference_steps = int(d["num_inference_steps"] if num_inference_steps is None else num_inference_steps)
        guidance_scale = float(d["guidance_scale"] if guidance_scale is None else guidance_scale)
        if shift is not None and not 0 < shift < float("inf"):
            raise InputError(f"shift must be a finite number > 0, got {shift}")
        if generator is None:
            generator = torch.Generator("cpu").manual_seed(0 if seed is None else int(seed))
        height = scene.height if height is None else int(height)
        width = scene.width if width is None else int(width)
        self.check_inputs(scene, height, width, render_only or inpaint == "pushpull", guidance_scale,
                          num_inference_steps, callback_on_step_end_tensor_inputs, output_type)
        fps = float(scene.fps if fps is None else fps)
        if fps <= 0:
            raise InputError(f"fps must be > 0, got {fps}")
        single = isinstance(camera, (str, CameraPath, CameraTrajectory))
        if not single and not isinstance(camera, (list, tuple)):
            raise InputError(f"camera must be a preset name, CameraPath, CameraTrajectory or a list of them, "
                             f"got {type(camera).__name__}")
        cameras = [camera] if single else list(camera)
        if not cameras:
            raise InputError("camera must name at least one camera path, got an empty list")
        trajectories = [resolve_camera(c, scene) for c in cameras]
        device = self._execution_device

        # 1. splat render + hole mask
        render, hole = render_views(scene.to(device), [t.to(device) for t in trajectories], height, width)
        if bool(hole.all()):
            logger.warning("no point of the scene is visible from the camera path: the whole video is a hole")
        if render_only:
            return self._output(render, render, hole, fps, output_type)
        if inpaint == "pushpull":
            return self._output(fill_holes(render, hole), render, hole, fps, output_type)

        # 2. conditions: text, CLIP image tokens, mask + masked-render latents
        B = len(trajectories)
        prompt = scene.prompt if prompt is None else prompt
        dtype = self.transformer.dtype
        do_cfg = guidance_scale > 1.0
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, negative_prompt, do_cfg, B, device, prompt_embeds, negative_prompt_embeds)
        prompt_embeds = prompt_embeds.to(dtype)
        negative_prompt_embeds = negative_prompt_embeds.to(dtype) if do_cfg else None
        image_embeds = encode_clip_image(self.image_encoder, scene_image(scene)[None].to(device))
        image_embeds = image_embeds.expand(B, -1, -1).to(device, dtype)
        cond: ViSMCondition = encode_condition(self.vae, render, hole)
        cond_latents = cond.latents.to(device, dtype)

        # 3. timesteps and noise
        scheduler = with_shift(self.scheduler, shift)
        scheduler.set_timesteps(num_inference_steps, device=device)
        latents = self.prepare_latents((B, LATENT_CHANNELS, *cond_latents.shape[2:]), device, generator, latents)

        # 4. denoising loop (CFG as two forwards, as diffusers' Wan pipelines do)
        self._interrupt = False
        with self.progress_bar(total=len(scheduler.timesteps)) as progress_bar:
            for i, t in enumerate(scheduler.timesteps):
                if self.interrupt:
                    break
                x = torch.cat([latents.to(dtype), cond_latents], dim=1)
                timestep = t.expand(B)
                noise_pred = self.transformer(x, timestep, prompt_embeds, image_embeds, return_dict=False)[0]
                if do_cfg:
                    noise_uncond = self.transformer(x, timestep, negative_prompt_embeds, image_embeds,
                                                    return_dict=False)[0]
                    noise_pred = noise_uncond + guidance_scale * (noise_pred - noise_uncond)
                latents = scheduler.step(noise_pred.float(), t, latents, return_dict=False)[0]
                if callback_on_step_end is not None:
                    local = {"latents": latents, "prompt_embeds": prompt_embeds,
                             "negative_prompt_embeds": negative_prompt_embeds}
                    outputs = callback_on_step_end(self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs})
                    latents = (outputs or {}).pop("latents", latents)
                progress_bar.update()

        # 5. decode
        video = vae_decode(self.vae, latents)  # (B, 3, T, H, W) in [-1, 1]
        frames = (video.float().permute(0, 2, 3, 4, 1) + 1.0) / 2.0
        if composite:
            frames = composite_frames(frames.clamp(0, 1), render.to(frames.device), hole.to(frames.device))
        self.maybe_free_model_hooks()
        return self._output(frames, render, hole, fps, output_type)

    @staticmethod
    def _output(frames: torch.Tensor, render: torch.Tensor, hole: torch.Tensor, fps: float,
                output_type: str) -> ViSMOutput:
        frames, render, hole = frames.float().clamp(0, 1).cpu(), render.float().cpu(), hole.cpu()
        if output_type == "np":
            return ViSMOutput(frames.numpy(), render.numpy(), hole.numpy(), fps)
        return ViSMOutput(frames, render, hole, fps)
