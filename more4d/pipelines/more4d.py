"""MoRe4DPipeline: image + prompt -> Scene4D (4D-STraG) -> novel-view videos along camera paths (4D-ViSM).

>>> pipe = MoRe4DPipeline.from_preset("tiny")
>>> result = pipe("photo.jpg", "a dog runs to the left", cameras=["orbit", "dolly"], seed=0)
>>> result.scene, [v.frames.shape for v in result.videos]     # one Scene4D, one ViSMOutput per camera path
>>> pipe.render(result.scene, "spiral")                         # more paths, same scene, no regeneration
>>> pipe.save_pretrained("my_more4d"); MoRe4DPipeline.from_pretrained("my_more4d")   # strag/, vism/, model_index.json

Each stage loads on first use. At full scale the two 14B transformers never sit in memory together: the
STraG models are released before ViSM loads (and the other way round); the text encoder is shared.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from more4d.errors import InputError
from more4d.pipelines.schedulers import scheduler_shift, split_scheduler_settings
from more4d.pipelines.vism import CameraLike, ViSMOutput, ViSMPipeline, preset_defaults
from more4d.scene import Scene4D

MemoryMode = Literal["full", "model_cpu_offload", "low_vram", "sequential_cpu_offload"]
MEMORY_MODES: tuple[str, ...] = ("full", "model_cpu_offload", "low_vram", "sequential_cpu_offload")
STRAG_ONLY = ("vae", "motion_vae", "transformer", "motion_encoder")  # released before ViSM loads at full scale
VISM_ONLY = ("vae", "transformer", "image_encoder")
MODEL_INDEX = "model_index.json"
# the ViSM folder of a saved two-stage pipeline leaves these out: they are the STraG folder's
SHARED = ("text_encoder", "tokenizer")


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

    def __init__(self, preset: str | None = "tiny", weights_dir: str | os.PathLike | None = None,
                 device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                 memory_mode: MemoryMode = "full", keep_both: bool | None = None, *,
                 pretrained: str | os.PathLike | None = None) -> None:
        from more4d.weights import get_preset, resolve_device, resolve_dtype

        if pretrained is None:
            preset = get_preset(preset).name
        if memory_mode not in MEMORY_MODES:
            raise InputError(f"memory_mode must be one of {MEMORY_MODES}, got {memory_mode!r}")
        self.device = resolve_device(device)
        if memory_mode != "full" and self.device.type != "cuda":
            raise InputError(f"memory_mode {memory_mode!r} needs a CUDA device, got {str(self.device)!r}")
        self.dtype = resolve_dtype(dtype, self.device)
        self.preset, self.weights_dir, self.memory_mode = preset, weights_dir, memory_mode
        self.pretrained = None if pretrained is None else Path(pretrained)
        self.keep_both = preset == "tiny" if keep_both is None else keep_both
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

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, memory_mode: MemoryMode = "full",
                        keep_both: bool | None = None) -> MoRe4DPipeline:
        """A pipeline written by `save_pretrained`: `folder/model_index.json` with the STraG pipeline in `strag/`
        and the ViSM one in `vism/` (which shares the STraG text encoder). Models load on first use."""
        index = read_model_index(folder)
        if index.get("_class_name") != cls.__name__:
            raise InputError(f"{str(folder)!r} holds a {index.get('_class_name')!r}, not a {cls.__name__}; load it "
                             f"with that class's from_pretrained")
        for stage in ("strag", "vism"):
            read_model_index(Path(folder) / stage)
        return cls(index.get("preset"), None, device, dtype, memory_mode, keep_both, pretrained=folder)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write both stages as diffusers pipelines (`strag/`, `vism/` without the shared text encoder) and a
        `model_index.json`; `from_pretrained` reads them back. Refuses a folder that exists and is not empty; a
        failed save leaves nothing behind."""
        out = Path(save_directory)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise InputError(f"{str(out)!r} exists and is not an empty folder; save into a new one")
        partial = out.with_name(out.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            self.strag.save_pretrained(partial / "strag")
            vism = self.vism
            shared = {name: getattr(vism, name) for name in SHARED}
            vism.register_modules(**dict.fromkeys(SHARED))
            try:
                vism.save_pretrained(partial / "vism")
            finally:
                vism.register_modules(**shared)
            index = {"_class_name": type(self).__name__, "preset": self.preset,
                     "strag": ["more4d.pipelines.strag", "STraGPipeline"],
                     "vism": ["more4d.pipelines.vism", "ViSMPipeline"]}
            (partial / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n")
            if out.exists():
                out.rmdir()
            partial.rename(out)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise

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
            if self.pretrained is not None:
                self._strag = STraGPipeline.from_pretrained(self.pretrained / "strag", dtype=self.dtype)
                self._strag.to(self._load_device())
            else:
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
            if self.pretrained is not None:
                if text_encoder is None:
                    text_encoder, tokenizer = (load_saved_component(self.pretrained / "strag", name, self.dtype)
                                               for name in SHARED)
                self._vism = ViSMPipeline.from_pretrained(self.pretrained / "vism", text_encoder=text_encoder,
                                                          tokenizer=tokenizer, dtype=self.dtype)
                self._vism.to(self._load_device())
            else:
                self._vism = ViSMPipeline.from_preset(self.preset, self.weights_dir, device=self._load_device(),
                                                      dtype=self.dtype, text_encoder=text_encoder, tokenizer=tokenizer)
            apply_memory_mode(self._vism, self.memory_mode, self.device, self.dtype)
        return self._vism

    @property
    def vism_defaults(self) -> dict[str, Any]:
        """The ViSM settings (the preset's, or the saved pipeline's), known without loading the models."""
        if self._vism is not None:
            return {**self._vism.defaults, "shift": scheduler_shift(self._vism.scheduler)}
        if self.pretrained is not None:
            folder = self.pretrained / "vism"
            scheduler = load_saved_component(folder, "scheduler", self.dtype)
            return {**read_model_index(folder)["defaults"], "shift": scheduler_shift(scheduler)}
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
        settings = self.vism_defaults
        if kwargs.get("render_only") or kwargs.get("inpaint", settings["inpaint"]) == "pushpull":
            defaults, scheduler = split_scheduler_settings(settings)
            return ViSMPipeline(scheduler=scheduler, defaults=defaults)(scene, camera, **kwargs)
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


def read_model_index(folder: str | os.PathLike) -> dict[str, Any]:
    """The `model_index.json` of a saved pipeline folder; `InputError` naming what is wrong otherwise."""
    file = Path(folder) / MODEL_INDEX
    if not file.is_file():
        raise InputError(f"{str(folder)!r} is not a saved pipeline: {MODEL_INDEX} is missing")
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{str(file)!r} is not valid JSON: {exc}") from None


def load_saved_component(folder: Path, name: str, dtype: torch.dtype) -> Any:
    """Load one component of a saved diffusers pipeline folder by the class its `model_index.json` names."""
    library, class_name = read_model_index(folder)[name]
    cls = getattr(importlib.import_module(library), class_name)
    if issubclass(cls, torch.nn.Module):
        return cls.from_pretrained(folder / name, dtype=dtype).eval().requires_grad_(False)
    return cls.from_pretrained(folder / name)
