"""STraGPipeline end to end on random tiny weights (5 frames at 32x48): shapes, K, determinism, CFG, schedulers,
user depth, callbacks / previews / interrupt, the CLI, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from more4d.cli import main as cli_main
from more4d.errors import InputError
from more4d.geometry import DEFAULT_FOV_DEG, backproject_depth, intrinsics_from_fov, resize_intrinsics
from more4d.pipelines.schedulers import make_scheduler
from more4d.pipelines.strag import STraGPipeline, bucket_size, center_crop_box, check_prompt
from more4d.scene import Scene4D
from more4d.weights import save_random_tiny

RES = (32, 32)
FAST = dict(num_frames=5, num_inference_steps=2, resolution=RES, guidance_scale=4.0)  # CFG on (the preset: off)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_random_tiny(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def pipe(tiny_dir) -> STraGPipeline:
    pipe = STraGPipeline.from_preset("tiny", tiny_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((48, 80, 3)) * 255).astype(np.uint8)


def test_bucketing_keeps_aspect_and_multiples():
    assert bucket_size(480, 640, 368 * 512) == (368, 496)
    assert bucket_size(1000, 1000, 256 * 256) == (256, 256)
    h, w = bucket_size(37, 1001, 256 * 256)
    assert h % 16 == 0 and w % 16 == 0 and h >= 16
    assert center_crop_box((100, 300), (50, 50)) == (0, 100, 100, 100)
    assert center_crop_box((300, 100), (32, 64)) == (125, 0, 50, 100)


@pytest.fixture(scope="module")
def scene(pipe, image) -> Scene4D:
    return pipe(image, "a ball rolls to the left", seed=1, **FAST)


def test_scene_shapes_frame0_and_K(scene):
    scene.validate()
    h, w = bucket_size(48, 80, RES[0] * RES[1])
    assert scene.image_size == (h, w) and scene.points.shape == (5, h * w, 3)
    assert scene.visibility.all()
    K = resize_intrinsics(intrinsics_from_fov(DEFAULT_FOV_DEG, 48, 80), (48, 80), (h, w),
                          crop=center_crop_box((48, 80), (h, w)))
    torch.testing.assert_close(scene.K, K)
    torch.testing.assert_close(scene.points[0], backproject_depth(scene.depth0, scene.K))
    assert scene.metadata["num_frames"] == 5 and scene.metadata["cfg"] is True
    json.dumps(scene.metadata)


def test_determinism_and_cfg_batching(pipe, image, scene):
    batches: list[int] = []
    handle = pipe.transformer.register_forward_hook(
        lambda m, args, kw, out: batches.append(kw["hidden_states"].shape[0]), with_kwargs=True)
    try:
        again = pipe(image, "a ball rolls to the left", generator=torch.Generator().manual_seed(1), **FAST)
        off = pipe(image, "a ball rolls to the left", seed=1, **{**FAST, "guidance_scale": 1.0})
    finally:
        handle.remove()
    torch.testing.assert_close(again.points, scene.points, rtol=0, atol=0)
    assert batches == [2, 2, 1, 1]  # CFG batched; no unconditional pass when guidance <= 1
    assert off.metadata["cfg"] is False and not torch.equal(off.points[1:], scene.points[1:])


def test_unipc_given_depth_and_release(tiny_dir, image):
    pipe = STraGPipeline.from_preset("tiny", tiny_dir)
    pipe.set_progress_bar_config(disable=True)
    depth = np.full((48, 80), 3.0, dtype=np.float32)
    depth[:, :10] = 0.0  # invalid strip: tracks there are invisible and stay at their frame-0 point
    pipe.scheduler = make_scheduler("unipc", 5.0)
    scene = pipe(image, "a ball rolls", depth=depth, release_stages=True, **FAST)
    assert pipe.transformer is None and pipe.text_encoder is None and pipe.depth_estimator is None
    with pytest.raises(InputError, match="released"):
        pipe(image, "a ball rolls", **FAST)
    z0 = scene.depth0
    assert torch.allclose(z0[z0 > 0], torch.tensor(3.0))
    assert not scene.visibility.all() and scene.visibility.any()
    invalid = ~scene.visibility[0]
    torch.testing.assert_close(scene.points[:, invalid], scene.points[:1, invalid].expand(5, -1, -1))
    assert scene.metadata["depth_source"] == "given" and scene.metadata["scheduler"] == "UniPCMultistepScheduler"


def test_conditions_come_from_the_rgb_vae(pipe):
    """The image/depth conditions are the RGB `vae`'s latents: the motion VAE (which may not keep colours) only
    decodes motion, so changing it leaves the conditions as they are."""
    import copy

    from more4d.models.motion_vae import wan_encode

    image = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(4))
    depth = torch.linspace(2.0, 6.0, 32 * 32).view(32, 32)
    cond = pipe.encode_conditions(image, depth, 5, torch.device("cpu"))
    assert cond.shape == (1, 48, 2, 4, 4)
    video = (image * 2 - 1).permute(2, 0, 1)[None, :, None].expand(-1, -1, 5, -1, -1)
    torch.testing.assert_close(cond[:, :16], wan_encode(pipe.vae, video))
    assert not cond[:, 16:32].any()  # the start slot
    saved = pipe.motion_vae
    pipe.register_modules(motion_vae=copy.deepcopy(saved))
    try:
        with torch.no_grad():
            for p in pipe.motion_vae.parameters():
                p.add_(torch.randn_like(p))
        torch.testing.assert_close(pipe.encode_conditions(image, depth, 5, torch.device("cpu")), cond)
    finally:
        pipe.register_modules(motion_vae=saved)


def test_callback_preview_seed_and_interrupt(pipe, image, scene):
    calls = []

    def on_step(p, step, t, kwargs):
        calls.append((step, sorted(kwargs)))
        assert isinstance(kwargs["preview"], Scene4D) and kwargs["preview"].num_frames == 5
        return {"latents": kwargs["latents"]}

    other_seed = pipe(image, "a ball rolls to the left", seed=2, callback_on_step_end=on_step, preview_every=1,
                      callback_on_step_end_tensor_inputs=("latents", "noise_pred"), **FAST)
    assert not torch.equal(other_seed.points[1:], scene.points[1:])
    assert calls == [(0, ["latents", "noise_pred", "preview"]), (1, ["latents", "noise_pred", "preview"])]

    def stop(p, step, t, kwargs):
        p._interrupt = True

    scene = pipe(image, "a ball rolls", callback_on_step_end=stop, **FAST)
    assert scene.metadata["interrupted"] and scene.metadata["steps_done"] == 1
    with pytest.raises(InputError, match="callback_on_step_end_tensor_inputs"):
        pipe(image, "a ball rolls", callback_on_step_end=stop, callback_on_step_end_tensor_inputs=("cond",), **FAST)


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompt=""), "empty"),
    (dict(prompt="   "), "empty"),
    (dict(prompt="x" * 5000), "at most"),
    (dict(prompt=b"\xff\xfe bad"), "UTF-8"),
    (dict(prompt="bad \ud800"), "UTF-8"),
    (dict(prompt=None), "exactly one of `prompt` and `prompt_embeds`"),
    (dict(num_frames=6), "4k\\+1"),
    (dict(num_frames=1), "4k\\+1"),
    (dict(num_frames="5"), "4k\\+1"),
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(guidance_scale=float("nan")), "guidance_scale"),
    (dict(shift=0.0), "shift"),
    (dict(preview_every=0), "preview_every"),
    (dict(surface_smoothing=-1), "surface_smoothing"),
    (dict(surface_smoothing=2.5), "surface_smoothing"),
    (dict(depth=np.zeros((48, 80))), "valid"),
    (dict(depth=np.ones((10, 80))), "aspect"),
])
def test_bad_arguments(pipe, image, kwargs, match):
    args = dict(FAST, prompt="a ball rolls")
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        pipe(image, **args)


def test_surface_smoothing_is_the_presets_and_smooths_depth_and_motion(pipe, image, scene):
    from more4d.surface_smoothing import smooth_depth_over_surfaces

    assert pipe.defaults["surface_smoothing"] == 100 and scene.metadata["surface_smoothing"] == 100
    raw = pipe(image, "a ball rolls to the left", seed=1, surface_smoothing=0, **FAST)
    assert raw.metadata["surface_smoothing"] == 0
    torch.testing.assert_close(scene.depth0, smooth_depth_over_surfaces(raw.depth0, 100))
    assert not torch.allclose(raw.points[1:] - raw.points[:1], scene.points[1:] - scene.points[:1])
    depth = np.full(image.shape[:2], 2.0, dtype=np.float32)
    depth[:, 40:] = 2.1  # a 5% step, which the smoothing would ramp
    given = pipe(image, "a ball rolls to the left", seed=1, depth=depth, **FAST)
    torch.testing.assert_close(given.depth0, pipe.prepare_image(image, depth, RES)[1])  # used as the user gave it


def test_bad_images(pipe, tmp_path):
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    Image.new("RGB", (1, 1)).save(tmp_path / "tiny.png")
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3))  # no memory allocated
    for bad, match in [(tmp_path / "junk.png", "could not be read"), (tmp_path / "tiny.png", "too small"),
                       (tmp_path / "nope.png", "does not exist"), (huge, "too large")]:
        with pytest.raises(InputError, match=match):
            pipe(bad, "a ball rolls", **FAST)


def test_check_prompt_accepts_utf8_bytes():
    assert check_prompt("  un chat qui saute  ") == "un chat qui saute"
    assert check_prompt("ein Hund läuft".encode()) == "ein Hund läuft"


def test_cli_generate_writes_scene_preview_settings(tiny_dir, image, tmp_path, capsys):
    Image.fromarray(image).save(tmp_path / "in.png")
    out = tmp_path / "run"
    rc = cli_main(["generate", str(tmp_path / "in.png"), "--prompt", "a ball rolls", "--weights", str(tiny_dir),
                   "--frames", "5", "--steps", "1", "--guidance", "1", "--seed", "7", "--device", "cpu",
                   "--resolution", "32x32", "--out", str(out)])
    assert rc == 0
    scene = Scene4D.load(out / "scene.safetensors")
    assert scene.num_frames == 5 and scene.metadata["seed"] == 7
    settings = json.loads((out / "settings.json").read_text())
    assert settings["arguments"]["prompt"] == "a ball rolls" and settings["scene"]["num_inference_steps"] == 1
    assert (out / "preview.mp4").stat().st_size > 0
    assert cli_main(["generate", str(tmp_path / "in.png"), "--prompt", "x", "--frames", "6", "--weights",
                     str(tiny_dir), "--device", "cpu", "--out", str(out)]) == 2
    assert "4k+1" in capsys.readouterr().err


def test_cli_generate_compile_flag_compiles_the_transformer(tiny_dir, image, tmp_path, monkeypatch):
    from more4d.pipelines.strag import STraGPipeline

    compiled = []
    monkeypatch.setattr(STraGPipeline, "compile_transformer", lambda self: compiled.append(self.transformer))
    Image.fromarray(image).save(tmp_path / "in.png")
    assert cli_main(["generate", str(tmp_path / "in.png"), "--prompt", "a ball", "--weights", str(tiny_dir),
                     "--frames", "5", "--steps", "1", "--guidance", "1", "--device", "cpu", "--resolution", "32x32",
                     "--compile", "--out", str(tmp_path / "run")]) == 0
    assert len(compiled) == 1
