"""Shared pytest fixtures: small seeded synthetic scenes (see `more4d.testing`), the training scripts."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from more4d.scene import Scene4D
from more4d.testing import make_test_scene

__all__ = ["make_test_scene"]


@pytest.fixture
def scene() -> Scene4D:
    """A 5-frame 24x32 moving toy scene (backdrop ~4-5 m, blob at 2.5 m), seed 0."""
    return make_test_scene()


@pytest.fixture
def scene_file(tmp_path, scene) -> str:
    """`scene` saved to a .safetensors file; returns its path."""
    return str(scene.save(tmp_path / "scene.safetensors"))


TRAIN_DIR = Path(__file__).resolve().parents[1] / "train"


def _load_train_script(name: str) -> ModuleType:
    """`train/<name>.py` as module `name` (registered in sys.modules, which dataclasses and type hints need)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TRAIN_DIR / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def train_script() -> Callable[[str], ModuleType]:
    """Loader of a training script by name, e.g. `train_script("train_vae").axis_weights`."""
    return _load_train_script

