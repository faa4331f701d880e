"""Weights: model presets ("tiny", "wan2.1-14b"), local-folder validation and loading, random tiny weights."""

from more4d.weights.presets import (
    PRESETS,
    TINY_DIR,
    Component,
    Preset,
    check_weights,
    get_preset,
    load_components,
    resolve_device,
    resolve_dtype,
    save_random_tiny,
)

__all__ = ["PRESETS", "TINY_DIR", "Component", "Preset", "check_weights", "get_preset", "load_components",
           "resolve_device", "resolve_dtype", "save_random_tiny"]
