"""The pipelines behave as diffusers pipelines: `save_pretrained` writes `model_index.json`, `from_pretrained` gives the
same pipeline back (defaults and all) and the same scene bit for bit, at tiny and at full-scale layout; the scheduler is
a swappable component; `latents=`, `prompt_embeds=` and `negative_prompt_embeds=` stand in for what the pipeline would
draw or encode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import UniPCMultistepScheduler

from more4d.errors import InputError
from more4d.pipelines.more4d import MoRe4DPipeline
from more4d.pipelines.schedulers import scheduler_shift
from more4d.pipelines.strag import STraGPipeline, preset_defaults
from more4d.testing_released import write_released_layout
from more4d.weights import get_preset, save_random_tiny

FAST = dict(num_frames=5, num_inference_steps=2, resolution=(32, 32))
PROMPT = "a red ball moves left"


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> MoRe4DPipeline:
    pipe = MoRe4DPipeline.from_preset("tiny", save_random_tiny(tmp_path_factory.mktemp("tiny"), seed=0), device="cpu")
    pipe.strag.set_progress_bar_config(disable=True)
    return pipe


def run(pipe: MoRe4DPipeline, image: np.ndarray, **kw):
    return pipe(image, PROMPT, cameras=["orbit"], strag_kwargs={**FAST, "guidance_scale": 4.0}, inpaint="model",
                composite=False, num_inference_steps=2, guidance_scale=2.0, **kw)


def test_two_stage_round_trip_tiny(tiny, image, tmp_path):
    before = run(tiny, image)
    tiny.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["_class_name"] == "MoRe4DPipeline" and index["preset"] == "tiny"
    strag_index = json.loads((tmp_path / "saved" / "strag" / "model_index.json").read_text())
    assert strag_index["_class_name"] == "STraGPipeline"
    assert strag_index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    assert strag_index["depth_estimator"] == ["more4d.depth.tiny", "TinyDepthEstimator"]
    vism_index = json.loads((tmp_path / "saved" / "vism" / "model_index.json").read_text())
    assert vism_index["text_encoder"] == [None, None] and not (tmp_path / "saved" / "vism" / "text_encoder").exists()

    loaded = MoRe4DPipeline.from_pretrained(tmp_path / "saved", device="cpu")
    assert loaded.vism_defaults == tiny.vism_defaults  # known before the models load
    after = run(loaded, image)
    assert torch.equal(after.scene.points, before.scene.points)
    assert np.array_equal(after.videos[0].frames, before.videos[0].frames)
    assert loaded.strag.defaults == tiny.strag.defaults and loaded.strag.resolution == tiny.strag.resolution
    assert loaded.strag.preset == "tiny" and after.scene.metadata["preset"] == "tiny"
    assert loaded.vism.defaults == tiny.vism.defaults
    assert scheduler_shift(loaded.vism.scheduler) == scheduler_shift(tiny.vism.scheduler) == 3.0


def test_save_refuses_a_used_folder_and_leaves_nothing_on_failure(tiny, tmp_path, monkeypatch):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not an empty folder"):
        tiny.save_pretrained(tmp_path / "used")
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["notes.txt"]

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(tiny.vism), "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        tiny.save_pretrained(tmp_path / "new")
    assert list(tmp_path.iterdir()) == [tmp_path / "used"]
    assert tiny.vism.text_encoder is not None  # the shared encoder is handed back after a failed save


def test_from_pretrained_names_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match="model_index.json is missing"):
        MoRe4DPipeline.from_pretrained(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "STraGPipeline"}))
    with pytest.raises(InputError, match="holds a 'STraGPipeline'"):
        MoRe4DPipeline.from_pretrained(tmp_path)


def test_scheduler_is_a_swappable_component(tiny, image, tmp_path):
    strag = tiny.strag
    euler = strag.scheduler
    reference = strag(image, PROMPT, **FAST)
    try:
        strag.scheduler = UniPCMultistepScheduler.from_config(
            euler.config, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=scheduler_shift(euler))
        unipc = strag(image, PROMPT, **FAST)
        assert unipc.metadata["scheduler"] == "UniPCMultistepScheduler"
        assert not torch.equal(unipc.points, reference.points)
        strag.save_pretrained(tmp_path / "unipc")
    finally:
        strag.scheduler = euler
    loaded = STraGPipeline.from_pretrained(tmp_path / "unipc")
    assert isinstance(loaded.scheduler, UniPCMultistepScheduler)
    assert torch.equal(loaded(image, PROMPT, **FAST).points, unipc.points)
    assert strag(image, PROMPT, **FAST, shift=2.0).metadata["shift"] == 2.0  # a per-call shift, pipe unchanged
    assert scheduler_shift(strag.scheduler) == 5.0


def test_latents_and_prompt_embeds_stand_in_for_what_the_pipeline_draws(tiny, image):
    strag = tiny.strag
    kw = {**FAST, "guidance_scale": 4.0}
    reference = strag(image, PROMPT, negative_prompt="blurry", seed=3, **kw)
    embeds, negative = strag.encode_prompt(PROMPT, "blurry", True, torch.device("cpu"))
    h, w = reference.image_size
    latents = strag.prepare_latents(5, h, w, torch.device("cpu"), torch.Generator().manual_seed(3))
    again = strag(image, prompt_embeds=embeds, negative_prompt_embeds=negative, latents=latents, **kw)
    assert torch.equal(again.points, reference.points)
    with pytest.raises(InputError, match="exactly one of `prompt` and `prompt_embeds`"):
        strag(image, PROMPT, prompt_embeds=embeds, **kw)
    with pytest.raises(InputError, match="`latents` must have shape"):
        strag(image, PROMPT, latents=latents[:, :, :1], **kw)
    with pytest.raises(InputError, match="`prompt_embeds` must be a tensor"):
        strag(image, prompt_embeds=embeds[0], **kw)

    vism = tiny.vism
    render = dict(num_inference_steps=2, guidance_scale=2.0, inpaint="model", composite=False)
    video = vism(reference, "orbit", seed=1, **render)
    pos, neg = vism.encode_prompt(reference.prompt, "", True, 1, torch.device("cpu"))
    video_latents = vism.prepare_latents((1, 16, 2, h // 8, w // 8), torch.device("cpu"), torch.Generator().manual_seed(1))
    same = vism(reference, "orbit", prompt_embeds=pos, negative_prompt_embeds=neg, latents=video_latents, **render)
    assert np.array_equal(same.frames, video.frames)


def test_full_scale_layout_round_trip(tmp_path, image):
    """The authors' released layout (random weights at tiny size) -> save_pretrained -> the same weights bit for bit
    and the preset's defaults. The scene agrees to float rounding, not bit for bit: the CPU BLAS sums a product with a
    strided input in an order that depends on where the weights sit in memory, which differs between two loads."""
    root = write_released_layout(tmp_path / "hub")
    pipe = MoRe4DPipeline.from_preset("moge4d", root, device="cpu")
    depth = np.full(image.shape[:2], 3.0, dtype=np.float32)
    kw = dict(**FAST, guidance_scale=4.0, depth=depth)
    before = pipe.generate(image, PROMPT, **kw)
    pipe.save_pretrained(tmp_path / "saved")
    loaded = MoRe4DPipeline.from_pretrained(tmp_path / "saved", device="cpu")
    torch.testing.assert_close(loaded.generate(image, PROMPT, **kw).points, before.points, rtol=0, atol=1e-4)
    original = MoRe4DPipeline.from_preset("moge4d", root, device="cpu")
    for name, module in original.strag.components.items():
        if isinstance(module, torch.nn.Module):
            saved = loaded.strag.components[name].state_dict()
            assert all(torch.equal(v, saved[k]) for k, v in module.state_dict().items()), name
    assert loaded.vism_defaults == pipe.vism_defaults
    preset = preset_defaults("moge4d")
    assert loaded.strag.defaults == {k: preset[k] for k in ("num_frames", "num_inference_steps", "guidance_scale",
                                                            "surface_smoothing")}
    assert preset["surface_smoothing"] == 0  # full scale keeps the model's own motion
    assert loaded.strag.resolution == get_preset("moge4d").resolution and loaded.strag.seed_compat
    assert loaded.strag.depth_estimator is None  # UniDepth is a separate package: pass depth= or --depth
    assert loaded.strag.config.vae_tiling and loaded.vism.config.vae_tiling  # the preset's memory setting kept
