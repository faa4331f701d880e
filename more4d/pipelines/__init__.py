"""Diffusers-style pipelines: STraGPipeline (image -> Scene4D), ViSMPipeline (Scene4D + camera -> video).

Imported lazily, so using one pipeline does not import the other's models.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"STraGPipeline": "more4d.pipelines.strag", "ViSMPipeline": "more4d.pipelines.vism",
            "ViSMOutput": "more4d.pipelines.vism"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'more4d.pipelines' has no attribute {name!r}")
