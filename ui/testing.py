"""A stand-in pipeline for tests of the app where the model is beside the point (sessions, progress, errors, the
queue, the GPU-function boundary). See also `ui.server.tiny_service` for the real tiny model."""

from __future__ import annotations

import time
from typing import Any

from more4d.testing import make_test_scene


class SceneOnlyPipeline:
    """Stands in for `MoRe4DPipeline`: generate returns a seeded `make_test_scene`, render draws it with the point
    renderer (final video = point render). Both call `callback_on_step_end` once per step, after `step_s` seconds."""

    def __init__(self, step_s: float = 0.0) -> None:
        self.step_s = step_s

    def generate(self, image: Any, prompt: str, *, num_frames: int = 17, num_inference_steps: int = 2,
                 generator: Any = None, callback_on_step_end: Any = None, **kwargs: Any) -> Any:
        self._steps(num_inference_steps, callback_on_step_end)
        scene = make_test_scene(T=num_frames, H=32, W=48, seed=generator.initial_seed() % 1000)
        scene.prompt = prompt
        return scene

    def render(self, scene: Any, camera: Any, *, num_inference_steps: int = 1, callback_on_step_end: Any = None,
               **kwargs: Any) -> Any:
        from more4d.pipelines.vism import ViSMOutput, resolve_camera
        from more4d.render import render_scene

        out = render_scene(scene, resolve_camera(camera, scene))
        self._steps(num_inference_steps, callback_on_step_end)
        return ViSMOutput(frames=out.rgb[None], render=out.rgb[None], mask=out.hole_mask[None], fps=scene.fps)

    def _steps(self, n: int, callback: Any) -> None:
        for step in range(n):
            time.sleep(self.step_s)
            callback(self, step, None, {})
