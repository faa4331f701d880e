"""Shared pytest fixtures: small seeded synthetic scenes (see `more4d.testing`)."""

from __future__ import annotations

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
