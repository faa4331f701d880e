"""What both stage pipelines share beyond diffusers' `DiffusionPipeline`: their saved settings, early stop,
compiling, the attention backend and freeing models."""

from __future__ import annotations

import gc
from typing import Any

import torch
from diffusers import DiffusionPipeline

from more4d.errors import InputError


class StagePipeline(DiffusionPipeline):
    """Base of `STraGPipeline` and `ViSMPipeline`. Set `pipe._interrupt = True` (e.g. from a step callback) to stop
    the denoising loop after the current step."""

    _interrupt = False

    def register_settings(self, call_defaults: dict[str, Any], defaults: dict[str, Any] | None, vae_tiling: bool,
                          **config: Any) -> None:
        """Record the settings saved with the pipeline: `call_defaults` updated by `defaults` (which may name only
        their keys), VAE tiling (turned on now if asked) and `config`. Call after the components are registered."""
        unknown = set(defaults or {}) - set(call_defaults)
        if unknown:
            raise InputError(f"`defaults` takes {sorted(call_defaults)}, got {sorted(unknown)} (the scheduler and its "
                             f"shift are the `scheduler` component)")
        self.register_to_config(defaults={**call_defaults, **(defaults or {})}, vae_tiling=False, **config)
        if vae_tiling:
            self.enable_vae_tiling()

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def compile_transformer(self) -> None:
        """`torch.compile` the transformer's repeated blocks (on an H100 the 14B STraG forward went from 0.735 s to
        0.548 s; bench/RESULTS.md). The first call compiles (about a minute at full scale)."""
        self.transformer.compile_repeated_blocks(fullgraph=True)

    def set_attention_backend(self, backend: str) -> None:
        """Attention backend of the transformer, e.g. "native" (SDPA), "flash", "_native_cudnn", "sage"."""
        self.transformer.set_attention_backend(backend)

    def release(self, *names: str) -> None:
        """Free models (all when no name is given): e.g. `release("text_encoder")` after encoding, or to hand it to
        the other stage."""
        for name in names or tuple(self.components):
            if name not in self.components:
                raise InputError(f"unknown component {name!r}; expected one of {sorted(self.components)}")
            self.register_modules(**{name: None})
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
