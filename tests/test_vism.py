"""4D-ViSM: conditioning (render, mask packing, VAE latents), the inpainting transformer and ViSMPipeline."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from more4d.camera import CameraTrajectory
from more4d.errors import InputError
from more4d.models.vism import (
    TINY_VISM_CONFIG,
    build_tiny_vism_components,
    build_vism_transformer,
    encode_clip_image,
)
from more4d.pipelines.vism import ViSMPipeline, resolve_camera
from more4d.pipelines.vism_conditioning import (
    composite_frames,
    encode_condition,
    fill_holes,
    pack_mask,
    render_views,
    training_pair,
)
from more4d.render import render_scene
from more4d.testing import make_test_scene


def tiny_vae() -> AutoencoderKLWan:
    torch.manual_seed(0)
    return AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True]).eval()


def tiny_text() -> tuple[PreTrainedTokenizerFast, UMT5EncoderModel]:
    vocab = {"[PAD]": 0, "[UNK]": 1, "</s>": 2, "a": 3, "red": 4, "ball": 5, "moving": 6}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", eos_token="</s>", model_max_length=32)
    torch.manual_seed(0)
    encoder = UMT5EncoderModel(UMT5Config(vocab_size=8, d_model=128, d_kv=32, d_ff=256, num_layers=1, num_heads=4))
    return tokenizer, encoder.eval()


@pytest.fixture(scope="module")
def pipe() -> ViSMPipeline:
    tokenizer, text_encoder = tiny_text()
    parts = build_tiny_vism_components(seed=0)
    return ViSMPipeline(transformer=parts["transformer"], vae=tiny_vae(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                        text_encoder=text_encoder, tokenizer=tokenizer, image_encoder=parts["image_encoder"])


@pytest.fixture(scope="module")
def scene():
    return make_test_scene(T=5, H=32, W=32, seed=1)


def reference_mask(hole: torch.Tensor) -> torch.Tensor:
    """Hand-packed Wan-Fun-InP mask: channel c of latent step k is frame 0 (k = 0) or frame 4(k-1)+1+c, sampled
    x1/8 with bilinear, align_corners False = the mean of the 2x2 pixels around each 8x8 cell's centre."""
    B, T, H, W = hole.shape
    keep = 1.0 - hole.float()
    tl = (T - 1) // 4 + 1
    out = torch.zeros(B, 4, tl, H // 8, W // 8)
    for k in range(tl):
        for c in range(4):
            f = 0 if k == 0 else 4 * (k - 1) + 1 + c
            for i in range(H // 8):
                for j in range(W // 8):
                    out[:, c, k, i, j] = keep[:, f, 8 * i + 3: 8 * i + 5, 8 * j + 3: 8 * j + 5].mean(dim=(-1, -2))
    return out


def test_pack_mask_matches_hand_reference():
    g = torch.Generator().manual_seed(0)
    hole = torch.rand(2, 9, 16, 24, generator=g) > 0.6
    packed = pack_mask(hole)
    assert packed.shape == (2, 4, 3, 2, 3)
    torch.testing.assert_close(packed, reference_mask(hole))
    # the first latent step repeats frame 0 in all 4 channels
    assert torch.equal(packed[:, 0, 0], packed[:, 3, 0])


@pytest.mark.parametrize("T", [5, 9, 17])
def test_condition_shapes(T):
    scene = make_test_scene(T=T, H=16, W=24, seed=T)
    trajs = [resolve_camera("orbit", scene), resolve_camera("dolly", scene)]
    render, hole = render_views(scene, trajs, 32, 48)
    assert render.shape == (2, T, 32, 48, 3) and hole.shape == (2, T, 32, 48) and hole.dtype == torch.bool
    cond = encode_condition(tiny_vae(), render, hole)
    tl = (T - 1) // 4 + 1
    assert cond.mask_latents.shape == (2, 4, tl, 4, 6)
    assert cond.masked_latents.shape == (2, 16, tl, 4, 6)
    assert cond.latents.shape == (2, 20, tl, 4, 6)
    assert torch.isfinite(cond.latents).all()


def test_condition_rejects_bad_frame_count_and_size():
    with pytest.raises(InputError, match="4k\\+1"):
        pack_mask(torch.zeros(1, 6, 16, 16, dtype=torch.bool))
    with pytest.raises(InputError, match="divisible"):
        pack_mask(torch.zeros(1, 5, 12, 16, dtype=torch.bool))


def test_tiny_transformer_config_and_clip_tokens():
    parts = build_tiny_vism_components(seed=0)
    tr = parts["transformer"]
    assert tr.config.in_channels == 36 and tr.config.out_channels == 16 and tr.config.image_dim == 128
    tokens = encode_clip_image(parts["image_encoder"], torch.rand(2, 40, 56, 3))
    assert tokens.shape == (2, 50, 128)
    with pytest.raises(InputError, match="in_channels=36"):
        build_vism_transformer(dict(TINY_VISM_CONFIG, in_channels=16))
    with pytest.raises(InputError, match="image_dim"):
        build_vism_transformer(dict(TINY_VISM_CONFIG, image_dim=None))


def test_render_only_equals_renderer(scene):
    out = ViSMPipeline()(scene, "orbit", render_only=True, height=24, width=40, output_type="pt")
    ref = render_scene(scene, resolve_camera("orbit", scene), height=24, width=40)
    assert torch.equal(out.render[0], ref.rgb) and torch.equal(out.frames[0], ref.rgb)
    assert torch.equal(out.mask[0], ref.hole_mask)
    assert out.fps == scene.fps


def test_pipeline_deterministic_batched_with_callback(pipe, scene):
    steps = []

    def callback(p, i, t, tensors):
        steps.append(i)
        assert tensors["latents"].shape == (2, 16, 2, 4, 4)
        return tensors

    kw = dict(num_inference_steps=2, guidance_scale=3.0, height=32, width=32)
    a = pipe(scene, ["orbit", "dolly"], "a red ball", generator=torch.Generator().manual_seed(3),
             callback_on_step_end=callback, **kw)
    b = pipe(scene, ["orbit", "dolly"], "a red ball", generator=torch.Generator().manual_seed(3), **kw)
    assert steps == [0, 1]
    assert a.frames.shape == (2, 5, 32, 32, 3) and a.frames.dtype == np.float32
    assert a.render.shape == (2, 5, 32, 32, 3) and a.mask.shape == (2, 5, 32, 32)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames[0], a.frames[1])  # two cameras, two videos
    assert np.isfinite(a.frames).all() and a.frames.min() >= 0 and a.frames.max() <= 1


def test_trajectory_resampled_to_scene_frames(scene):
    long = resolve_camera("orbit", make_test_scene(T=9, H=32, W=32, seed=1))
    traj = resolve_camera(long, scene)
    assert len(traj) == scene.num_frames
    torch.testing.assert_close(traj.c2w[[0, -1]], long.c2w[[0, -1]], atol=1e-5, rtol=0)
    still = resolve_camera(CameraTrajectory(torch.eye(4)[None], torch.tensor([50.0]), torch.zeros(1)), scene)
    assert len(still) == scene.num_frames and torch.equal(still.c2w[-1], torch.eye(4))
    bad = CameraTrajectory(torch.full((3, 4, 4), float("nan")), torch.full((3,), 50.0), torch.arange(3.0))
    with pytest.raises(InputError, match="cannot resample"):
        resolve_camera(bad, scene)
    with pytest.raises(InputError, match="preset"):
        resolve_camera("no-such-preset", scene)


def test_cameras_behind_all_points_give_all_hole_mask(pipe, scene):
    back = torch.diag(torch.tensor([-1.0, 1.0, -1.0, 1.0]))  # 180 degrees about y: looks away from the scene
    traj = CameraTrajectory(back.expand(5, 4, 4).clone(), torch.full((5,), 50.0), torch.arange(5.0) / 8)
    out = pipe(scene, traj, num_inference_steps=1, guidance_scale=1.0, height=32, width=32, generator=torch.Generator().manual_seed(0))
    assert out.mask.all() and (out.render == 0).all()
    assert np.isfinite(out.frames).all()


def test_bad_inputs(pipe, scene):
    with pytest.raises(InputError, match="positive"):
        ViSMPipeline()(scene, "orbit", render_only=True, height=0, width=32)
    with pytest.raises(InputError, match="positive"):
        pipe(scene, "orbit", height=32, width=0)
    with pytest.raises(InputError, match="divisible by 16"):
        pipe(scene, "orbit", height=40, width=32)
    with pytest.raises(InputError, match="4k\\+1"):
        pipe(make_test_scene(T=6, H=32, W=32), "orbit")
    with pytest.raises(InputError, match="missing components"):
        ViSMPipeline()(scene, "orbit")
    with pytest.raises(InputError, match="output_type"):
        ViSMPipeline()(scene, "orbit", render_only=True, output_type="pil")
    with pytest.raises(InputError, match="camera must"):
        ViSMPipeline()(scene, 3.0, render_only=True)


def test_training_pair_from_clip(scene):
    # a TrajClip-like clip: the scene's tracks, frames = the render from the input camera, one novel view
    frames = (render_scene(scene, resolve_camera("static", scene)).rgb * 255).round().to(torch.uint8)
    orbit = resolve_camera("orbit", scene)
    novel = SimpleNamespace(c2w=orbit.c2w, K=scene.K, frames=frames)
    clip = SimpleNamespace(frames=frames, points=scene.points, visibility=scene.visibility, colors=scene.colors,
                           K=scene.K, caption=scene.prompt, fps=scene.fps, meta={}, novel=[novel])
    render, hole, target = training_pair(clip)
    assert render.shape == (5, 32, 32, 3) and hole.shape == (5, 32, 32) and target.shape == (5, 32, 32, 3)
    assert not hole[0].any()  # every frame-0 pixel is its own track
    assert hole.any()  # tracks hidden behind the moving blob leave holes later
    render_n, hole_n, _ = training_pair(clip, view=0)
    ref = render_scene(scene, orbit)
    assert torch.equal(render_n, ref.rgb) and torch.equal(hole_n, ref.hole_mask)
    with pytest.raises(InputError, match="view"):
        training_pair(clip, view=1)


def test_fill_holes_keeps_covered_pixels_and_fills_smoothly():
    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 48), indexing="ij")
    image = torch.stack([x, y, 0.5 * (x + y)], -1)[None].repeat(2, 1, 1, 1)  # (2, 32, 48, 3) linear ramps
    hole = torch.zeros(2, 32, 48, dtype=torch.bool)
    hole[0, 10:20, 5:30] = True
    hole[1, :, 40:] = True  # a hole touching the border
    filled = fill_holes(image, hole)
    assert torch.equal(filled[~hole], image[~hole])
    inner = hole.clone()
    inner[1] = False
    assert (filled[inner] - image[inner]).abs().max() < 0.05  # an enclosed hole of a ramp is interpolated
    known = image[1][~hole[1]]
    assert (filled[1][hole[1]] >= known.min(0).values).all() and (filled[1][hole[1]] <= known.max(0).values).all()
    flat = torch.full((1, 8, 8, 3), 0.3)
    assert torch.allclose(fill_holes(flat, torch.rand(1, 8, 8) < 0.5), flat)
    everywhere = torch.ones(1, 8, 8, dtype=torch.bool)
    assert torch.equal(fill_holes(flat, everywhere), flat)  # nothing to fill from: unchanged


def test_composite_keeps_the_render_away_from_holes():
    render, frames = torch.zeros(1, 16, 16, 3), torch.ones(1, 16, 16, 3)
    hole = torch.zeros(1, 16, 16, dtype=torch.bool)
    hole[0, 6:10, 6:10] = True
    out = composite_frames(frames, render, hole, feather_px=2)
    assert torch.equal(out[hole], frames[hole])
    far = torch.ones(16, 16, dtype=torch.bool)
    far[2:14, 2:14] = False  # more than 2 px from the hole
    assert torch.equal(out[0][far], render[0][far])
    seam = out[0, 5, 7, 0]
    assert 0 < seam < 1  # blended next to the hole


def test_inpaint_modes_keep_what_the_render_knows(pipe, scene):
    kw = dict(num_inference_steps=1, height=32, width=32, output_type="pt")
    model = pipe(scene, "orbit", inpaint="model", composite=False, **kw)
    kept = pipe(scene, "orbit", inpaint="model", composite=True, **kw)
    pixel = pipe(scene, "orbit", inpaint="pushpull", **kw)
    hole = model.mask[0]
    assert hole.any() and not hole[0].any()  # the orbit starts at the input camera
    covered = F.max_pool2d(hole.float()[:, None], 5, 1, 2)[:, 0] == 0  # more than the 2-px seam from any hole
    assert torch.equal(kept.frames[0][covered], model.render[0][covered])
    assert torch.equal(kept.frames[0][0], model.render[0][0])  # frame 0 is the input view, exactly
    assert not torch.equal(model.frames[0][covered], model.render[0][covered])  # the model alone repaints
    assert torch.equal(pixel.frames[0][~hole], pixel.render[0][~hole])
    with pytest.raises(InputError, match="inpaint"):
        pipe(scene, "orbit", inpaint="telea", **kw)
