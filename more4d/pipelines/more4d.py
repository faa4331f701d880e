"""MoRe4DPipeline: image + prompt -> Scene4D (4D-STraG) -> novel-view videos along camera paths (4D-ViSM).

>>> pipe = MoRe4DPipeline.from_preset("tiny")
>>> result = pipe("photo.jpg", "a dog runs to the left", cameras=["orbit", "dolly"], seed=0)
>>> result.scene, [v.frames.shape for v in result.videos]     # one Scene4D, one ViSMOutput per camera path
>>> pipe.render(result.scene, "spiral")                         # more paths, same scene, no regeneration

Each stage loads on first use. At full scale the two 14B transformers never sit in memory together: the
STraG models are released before ViSM loads (and the other way round); the text encoder is shared.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from more4d.errors import InputError
from more4d.pipelines.vism import CameraLike, ViSMOutput, ViSMPipeline, preset_defaults
from more4d.scene import Scene4D

MemoryMode = Literal["full", "model_cpu_offload", "low_vram", "sequential_cpu_offload"]
MEMORY_MODES: tuple[str, ...] = ("full", "model_cpu_offload", "low_vram", "sequential_cpu_offload")
STRAG_ONLY = ("vae", "motion_vae", "transformer", "motion_encoder")  # released before ViSM loads at full scale
VISM_ONLY = ("vae", "transformer", "image_encoder")


@dataclass
class MoRe4DOutput:
    """scene: the generated Scene4D; videos: one ViSMOutput per camera path, in order."""

    scene: Scene4D
    videos: list[ViSMOutput]


def apply_memory_mode(pipe: Any, mode: MemoryMode, device: torch.device, dtype: torch.dtype) -> None:
    """Set up a stage pipeline loaded on the CPU (or on `device` for "full") for memory mode `mode`."""
    if mode not in MEMORY_MODES:
        raise InputError(f"memory_mode must be one of {MEMORY_MODES}, got {mode!r}")
    if mode == "low_vram":  # fp8 storage, `dtype` compute (norms and embeddings stay as they are)
        pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    if mode in ("model_cpu_offload", "low_vram"):
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "sequential_cpu_offload":
        pipe.enable_sequential_cpu_offload(device=device)


class MoRe4DPipeline:
    """The two stages end to end, loaded lazily from one weights preset.

    Memory modes (CUDA): "full" (each stage wholly on the GPU), "model_cpu_offload" (each model on the GPU only
    while it runs), "low_vram" (model offload + fp8 weight storage of the transformers, bf16 compute),
    "sequential_cpu_offload" (layer by layer; slowest, least memory). VAE tiling follows the preset (on at full
    scale).
    """

    def __init__(self, preset: str = "tiny", weights_dir: str | os.PathLike | None = None,
                 device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                 memory_mode: MemoryMode = "full", keep_both: bool | None = None) -> None:
        from more4d.weights import get_preset, resolve_device, resolve_dtype

        spec = get_preset(preset)
        if memory_mode not in MEMORY_MODES:
            raise InputError(f"memory_mode must be one of {MEMORY_MODES}, got {memory_mode!r}")
        self.device = resolve_device(device)
        if memory_mode != "full" and self.device.type != "cuda":
            raise InputError(f"memory_mode {memory_mode!r} needs a CUDA device, got {str(self.device)!r}")
        self.dtype = resolve_dtype(dtype, self.device)
        self.preset, self.weights_dir, self.memory_mode = spec.name, weights_dir, memory_mode
        self.keep_both = spec.name == "tiny" if keep_both is None else keep_both
        self._strag: Any = None
        self._vism: ViSMPipeline | None = None

    @classmethod
    def from_preset(cls, preset: str = "tiny", weights_dir: str | os.PathLike | None = None,
                    device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                    memory_mode: MemoryMode = "full") -> MoRe4DPipeline:
        """Check the weights folder now (clear message listing missing files); models load on first use."""
        from more4d.weights import check_weights

        check_weights(preset, weights_dir)
        return cls(preset, weights_dir, device, dtype, memory_mode)

    # -- stages ------------------------------------------------------------------------------------------------------
    def _load_device(self) -> torch.device:
        return torch.device("cpu") if self.memory_mode != "full" else self.device


    @property
    def strag(self) -> Any:
        """The STraGPipeline (loaded now if needed; at full scale the ViSM models are released first)."""
        if self._strag is None:
            from more4d.pipelines.strag import STraGPipeline

            if self._vism is not None and not self.keep_both:
                self._vism.release(*VISM_ONLY)
                self._vism = None
            self._strag = STraGPipeline.from_preset(self.preset, self.weights_dir, device=self._load_device(),
                                                    dtype=self.dtype)
            apply_memory_mode(self._strag, self.memory_mode, self.device, self.dtype)
        return self._strag

    @property
    def vism(self) -> ViSMPipeline:
        """The ViSMPipeline (loaded now if needed; at full scale the STraG models are released first)."""
        if self._vism is None:
            text_encoder = tokenizer = None
            if self._strag is not None:
                text_encoder, tokenizer = self._strag.text_encoder, self._strag.tokenizer
                if not self.keep_both:
                    self._strag.release(*STRAG_ONLY, "depth_estimator")
                    self._strag = None
            self._vism = ViSMPipeline.from_preset(self.preset, self.weights_dir, device=self._load_device(),
                                                  dtype=self.dtype, text_encoder=text_encoder, tokenizer=tokenizer)
            apply_memory_mode(self._vism, self.memory_mode, self.device, self.dtype)
        return self._vism

    @property
    def vism_defaults(self) -> dict[str, Any]:
        """The preset's ViSM settings, known without loading the models."""
        return preset_defaults(self.preset)

    # -- calls -------------------------------------------------------------------------------------------------------
    def generate(self, image: Any, prompt: str, **kwargs: Any) -> Scene4D:
        """image + prompt -> Scene4D; keyword arguments go to `STraGPipeline.__call__`."""
        return self.strag(image, prompt, **kwargs)

    def render(self, scene: Scene4D, camera: CameraLike | Sequence[CameraLike], **kwargs: Any) -> ViSMOutput:
        """Scene4D + camera path(s) -> ViSMOutput; keyword arguments go to `ViSMPipeline.__call__`.

        `render_only=True` and a pixel-space fill (`inpaint="pushpull"`, the tiny preset's default) need no model
        and load nothing.
        """
        if kwargs.get("render_only") or kwargs.get("inpaint", self.vism_defaults["inpaint"]) == "pushpull":
            return ViSMPipeline(defaults=self.vism_defaults)(scene, camera, **kwargs)
        return self.vism(scene, camera, **kwargs)

    def __call__(self, image: Any, prompt: str, cameras: Sequence[CameraLike] = ("orbit",), *,
                 negative_prompt: str = "", seed: int = 0, strag_kwargs: dict[str, Any] | None = None,
                 callback: Callable[[str, int, int], None] | None = None, **render_kwargs: Any) -> MoRe4DOutput:
        """Generate one Scene4D, then render it along each camera path (the scene is not regenerated).

        Args:
            cameras: preset names, CameraPaths or CameraTrajectories; one video each.
            strag_kwargs: extra arguments of the STraG stage (num_frames, num_inference_steps, guidance_scale, ...).
            callback: `fn(stage, step, total_steps)` progress hook, stage "strag" or "vism:<i>".
            render_kwargs: arguments of the ViSM stage (num_inference_steps, guidance_scale, height, width, ...).
        """
        if isinstance(cameras, (str, bytes)) or not isinstance(cameras, Sequence) or not cameras:
            raise InputError(f"cameras must be a non-empty list of camera paths or preset names, got {cameras!r}")
        strag_kwargs = dict(strag_kwargs or {})
        if callback is not None:
            total = strag_kwargs.get("num_inference_steps") or self.strag.defaults["num_inference_steps"]
            strag_kwargs["callback_on_step_end"] = _progress(callback, "strag", total)
        scene = self.generate(image, prompt, negative_prompt=negative_prompt, seed=seed, **strag_kwargs)
        videos = []
        for i, camera in enumerate(cameras):
            kw = dict(render_kwargs)
            if callback is not None and not kw.get("render_only"):
                total = kw.get("num_inference_steps") or self.vism_defaults["num_inference_steps"]
                kw["callback_on_step_end"] = _progress(callback, f"vism:{i}", total)
            videos.append(self.render(scene, camera, seed=seed, **kw))
        return MoRe4DOutput(scene, videos)


def _progress(callback: Callable[[str, int, int], None], stage: str, total: int) -> Callable:
    def on_step(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
        callback(stage, step + 1, int(total))
        return tensors

    return on_step
