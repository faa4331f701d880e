"""MoRe4DPipeline end to end on random tiny weights: one Scene4D, several camera paths, stage release, errors."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

from more4d.errors import InputError
from more4d.pipelines.more4d import MoRe4DPipeline
from more4d.render import render_scene
from more4d.weights import save_random_tiny

STRAG = dict(num_frames=5, num_inference_steps=1, resolution=(64, 64))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_random_tiny(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def image():
    return (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)


def test_one_scene_several_cameras(weights, image):
    pipe = MoRe4DPipeline.from_preset("tiny", weights, device="cpu")
    calls = []
    original = pipe.strag.__call__
    pipe.strag.__call__ = lambda *a, **k: calls.append(1) or original(*a, **k)  # count STraG runs
    progress = []
    out = pipe(image, "a red ball moving", cameras=["orbit", "dolly"], strag_kwargs=STRAG, num_inference_steps=1,
               inpaint="model", callback=lambda stage, step, total: progress.append((stage, step, total)))
    scene = out.scene
    assert len(out.videos) == 2 and scene.num_frames == 5 and scene.image_size == (64, 64)
    for video in out.videos:
        assert video.frames.shape == (1, 5, 64, 64, 3) and video.mask.shape == (1, 5, 64, 64)
        assert np.isfinite(video.frames).all()
    assert not np.array_equal(out.videos[0].render, out.videos[1].render)
    assert ("strag", 1, 1) in progress and ("vism:1", 1, 1) in progress
    # more paths reuse the scene: render-only needs no model and matches the renderer
    again = pipe.render(scene, "orbit", render_only=True, output_type="pt")
    from more4d.pipelines.vism import resolve_camera

    assert torch.equal(again.frames[0], render_scene(scene, resolve_camera("orbit", scene)).rgb)
    # deterministic: the same seed gives the same video
    rerun = pipe.render(scene, "orbit", num_inference_steps=1, seed=0, inpaint="model")
    np.testing.assert_array_equal(rerun.frames, out.videos[0].frames)
    # the tiny preset's default fills holes in pixel space: no model runs, covered pixels are the render's
    filled = pipe.render(scene, "orbit", output_type="pt")
    covered = ~filled.mask[0]
    assert torch.equal(filled.frames[0][covered], again.frames[0][covered]) and filled.mask.any()


def test_full_scale_policy_releases_the_other_stage(weights, image):
    pipe = MoRe4DPipeline("tiny", weights, device="cpu", keep_both=False)
    scene = pipe.generate(image, "a ball", **STRAG)
    text_encoder = pipe.strag.text_encoder
    released = [weakref.ref(getattr(pipe.strag, name)) for name in ("transformer", "motion_vae", "motion_encoder")]
    pipe.render(scene, "static", num_inference_steps=1, inpaint="model")
    assert pipe._strag is None and pipe.vism.text_encoder is text_encoder  # shared, not reloaded
    assert all(ref() is None for ref in released)  # freed, not only dropped (their memory is needed by ViSM)
    assert pipe.strag is not None and pipe._vism is None  # loading STraG again releases ViSM


def test_sequential_offload_gives_the_same_result(weights, image):
    """Layer-by-layer offload keeps parameters on the meta device between calls: inputs must follow the hooks."""
    from accelerate import cpu_offload

    pipe = MoRe4DPipeline.from_preset("tiny", weights, device="cpu")
    reference = pipe.generate(image, "a ball", seed=3, **STRAG)
    video = pipe.render(reference, "orbit", num_inference_steps=1, seed=0, inpaint="model").frames
    modules = {id(m): m for stage in (pipe.strag, pipe.vism) for m in stage.components.values()
               if isinstance(m, torch.nn.Module)}  # the text encoder is shared
    for module in modules.values():
        # the tiny text encoder's nn.TransformerEncoder checks its weights' devices before any inner hook runs
        cpu_offload(module, execution_device=torch.device("cpu"), preload_module_classes=["TransformerEncoder"])
    assert next(pipe.strag.transformer.parameters()).device.type == "meta"
    scene = pipe.generate(image, "a ball", seed=3, **STRAG)
    torch.testing.assert_close(scene.points, reference.points)
    np.testing.assert_array_equal(pipe.render(scene, "orbit", num_inference_steps=1, seed=0, inpaint="model").frames,
                                  video)


def test_vae_tiling_follows_the_preset(weights, monkeypatch):
    import dataclasses

    from more4d.weights import presets

    assert presets.PRESETS["wan2.1-14b"].vae_tiling and not presets.PRESETS["tiny"].vae_tiling
    pipe = MoRe4DPipeline("tiny", weights, device="cpu")
    assert not pipe.strag.motion_vae.vae.use_tiling and not pipe.vism.vae.use_tiling
    monkeypatch.setitem(presets.PRESETS, "tiny", dataclasses.replace(presets.PRESETS["tiny"], vae_tiling=True))
    pipe = MoRe4DPipeline("tiny", weights, device="cpu")
    assert pipe.strag.motion_vae.vae.use_tiling and pipe.vism.vae.use_tiling


def test_bad_inputs(weights, image, tmp_path):
    with pytest.raises(InputError, match="memory_mode"):
        MoRe4DPipeline("tiny", weights, device="cpu", memory_mode="all-on-gpu")
    with pytest.raises(InputError, match="needs a CUDA device"):
        MoRe4DPipeline("tiny", weights, device="cpu", memory_mode="low_vram")
    with pytest.raises(InputError, match="missing"):
        MoRe4DPipeline.from_preset("tiny", tmp_path)
    pipe = MoRe4DPipeline("tiny", weights, device="cpu")
    with pytest.raises(InputError, match="cameras"):
        pipe(image, "a ball", cameras=[], strag_kwargs=STRAG)
    with pytest.raises(InputError, match="cameras"):
        pipe(image, "a ball", cameras="orbit", strag_kwargs=STRAG)
