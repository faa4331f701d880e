"""Numerical parity with the authors' code: the oracle fixtures (tests/fixtures/moge4d_parity/README.md), loaded
through the same functions a released MoGe4D download goes through (`more4d.weights.released`), in float32.

Each fixture's weights are written in the released layout under a temporary folder first. The fixture folder is
`$MORE4D_PARITY_FIXTURES` when set, else the shared oracle folder beside the checkout when present, else the copy in
tests/fixtures. Tolerances follow the fixtures' README: single forwards atol 1e-5 / rtol 1e-4, the five-step
sampler atol 1e-4. Every test prints the max abs error it measured (pytest -s shows them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from more4d.geometry import SEED_MOTION_ALPHAS, backproject_depth, normalize_motion, valid_depth_mask
from more4d.models.lora import load_lora, merge_lora
from more4d.models.wan_keys import load_original_wan_transformer, original_to_diffusers_key
from more4d.pipelines.schedulers import make_scheduler
from more4d.pipelines.strag import STraGPipeline, depth_condition
from more4d.weights import layout as paths
from more4d.weights import released

REPO = Path(__file__).resolve().parents[1]


def fixture_dir() -> Path:
    for candidate in (os.environ.get("MORE4D_PARITY_FIXTURES"), REPO.parent / "shared" / "fixtures" / "moge4d_parity",
                      REPO / "tests" / "fixtures" / "moge4d_parity"):
        if candidate and (Path(candidate) / "strag_transformer.safetensors").is_file():
            return Path(candidate)
    raise FileNotFoundError("no parity fixtures: set MORE4D_PARITY_FIXTURES")


def fixture(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    folder = fixture_dir()
    return load_file(folder / f"{name}.safetensors"), json.loads((folder / f"{name}.json").read_text())


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v.contiguous() for k, v in tensors.items() if k.startswith(prefix)}


def max_err(name: str, ours: torch.Tensor, theirs: torch.Tensor, atol: float, rtol: float = 1e-4) -> None:
    err = (ours.float() - theirs.float()).abs().max().item()
    print(f"parity {name}: max abs error {err:.3g}")
    torch.testing.assert_close(ours.float(), theirs.float(), atol=atol, rtol=rtol, equal_nan=True)


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> paths.ReleasedLayout:
    """The fixtures' weights as a released download: 4D-STraG safetensors + config, VAE/ `.bin` files."""
    root = tmp_path_factory.mktemp("released")
    strag, strag_meta = fixture("strag_transformer")
    folder = root / "MoGe4D" / "4D-STraG"
    folder.mkdir(parents=True)
    save_file(prefixed(strag, "state."), folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps(strag_meta["config"]))
    vae, _ = fixture("motion_vae")
    for sub, prefix in (("encoder_prompt", "state.enc_adaptor."), ("decoder_prompt", "state.dec_adaptor."),
                        ("vae", "state.vae.")):
        (root / "MoGe4D" / "VAE" / sub).mkdir(parents=True)
        torch.save(prefixed(vae, prefix), root / "MoGe4D" / "VAE" / sub / "pytorch_model.bin")
    return paths.ReleasedLayout({"MoGe4D": root / "MoGe4D"})


@pytest.fixture(scope="module")
def strag_model(layout):
    return released.load_released_strag(layout / paths.STRAG_DIR).eval()


@pytest.fixture(scope="module")
def motion_vae(layout):
    return released.load_released_motion_vae(layout).eval()


def padded_context(*embeds: torch.Tensor, length: int = 512) -> torch.Tensor:
    """Per-prompt text embeddings zero-padded to the model's text length, as the authors' model pads them."""
    return torch.stack([F.pad(e, (0, 0, 0, length - e.shape[0])) for e in embeds])


@torch.no_grad()
def test_strag_transformer_forward_mpm_on_and_off(layout, strag_model):
    t, meta = fixture("strag_transformer")
    assert strag_model.config.seed_compat and strag_model.config.num_attention_heads == meta["config"]["num_heads"]
    omnimae = released.load_released_omnimae(layout / paths.STRAG_DIR,
                                             num_heads=meta["omnimae_config"]["num_heads"]).eval()
    features = omnimae(t["input.first_frame"])
    max_err("omnimae tokens", features.flatten(2).transpose(1, 2), t["inter.omnimae_patch_tokens"], 1e-5)
    kwargs = dict(hidden_states=torch.cat([t["input.x"], t["input.y"]], 1), timestep=t["input.t"],
                  encoder_hidden_states=padded_context(t["input.context.0"], t["input.context.1"]),
                  encoder_hidden_states_image=t["input.clip_fea"], ref_latents=t["input.full_ref"])
    max_err("strag mpm_on", strag_model(**kwargs, motion_features=features).sample, t["output.mpm_on"], 1e-5)
    max_err("strag mpm_off", strag_model(**kwargs).sample, t["output.mpm_off"], 1e-5)


@torch.no_grad()
def test_motion_vae_encode_decode_with_and_without_trajectory_norm(motion_vae):
    t, _ = fixture("motion_vae")
    c = motion_vae.vae.config
    for ours, name in ((c.latents_mean, "scale_mean"), (c.latents_std, "scale_std"),
                       (released.TRAJECTORY_MEAN, "traj_mean"), (released.TRAJECTORY_STD, "traj_std")):
        assert torch.equal(torch.tensor(ours, dtype=torch.float32), t[f"const.{name}"]), name
    pseudo = motion_vae.encoder_adaptor(t["input.motion"])
    max_err("motion vae pseudo video", pseudo, t["inter.pseudo_video"], 1e-5)
    mu = motion_vae.encode_video(pseudo)
    max_err("motion vae mu", mu, t["inter.mu"], 1e-5)
    max_err("motion vae mu (traj norm)", motion_vae.encode_motion(t["input.motion"]), t["inter.mu_traj_norm"], 1e-5)
    decoded = motion_vae.decode_video(motion_vae.denormalize_trajectory(t["inter.mu_traj_norm"]))
    max_err("motion vae decode (traj norm)", decoded, t["output.decoded_traj_norm"], 1e-5)
    # the decoder adaptor alone, on the authors' decoded video, then chained: its random 3x3 convs amplify the
    # decoder's few-1e-6 float differences about fivefold, hence the looser bound on the chained output
    max_err("motion vae decoder adaptor", motion_vae.decoder_adaptor(t["output.decoded_traj_norm"]), t["output.final"],
            1e-5)
    max_err("motion vae final", motion_vae.decode_motion(t["inter.mu_traj_norm"]), t["output.final"], 5e-5)
    max_err("motion vae decode (plain)", motion_vae.decode_video(t["inter.mu"]), t["output.decoded_plain"], 1e-5)
    max_err("motion vae decode of sample", motion_vae.decode_video(t["inter.sample"]),
            t["output.decoded_of_sample"], 1e-5)
    # what the authors' inference does to a latent of the space their trainer encodes in (no traj norm)
    mismatch = motion_vae.decode_video(motion_vae.denormalize_trajectory(t["inter.mu"]))
    max_err("motion vae decode (mismatch)", mismatch, t["output.decoded_mismatch"], 1e-5)


def test_kohya_lora_merge(tmp_path):
    t, meta = fixture("lora_merge")
    base = tmp_path / "wan"
    base.mkdir()
    save_file(prefixed(t, "before.wan3d."), base / "diffusion_pytorch_model.safetensors")
    (base / "config.json").write_text(json.dumps(meta["wan3d_config"]))
    save_file(prefixed(t, "lora."), tmp_path / "lora.safetensors")
    model = load_original_wan_transformer(base)  # the loader of the released InP base
    load_lora(model, tmp_path / "lora.safetensors")
    merge_lora(model, meta["multiplier"])
    weights = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if "lora_" not in k}
    after = prefixed(t, "after.wan3d.")
    assert sorted(after) == sorted(meta["touched_wan3d"])
    for key, value in prefixed(t, "before.wan3d.").items():
        expected = after.get(key, value)
        assert torch.equal(weights[original_to_diffusers_key(key)], expected), key
    print(f"parity lora merge: {len(after)} merged tensors bit-identical")


def test_track_normalisation_differs_only_at_invalid_depths():
    t, _ = fixture("track_norm")
    coords = t["input.coords"]  # (B, 3, T, H, W)
    points = coords.flatten(3).permute(0, 2, 3, 1)  # (B, T, N, 3)
    m, valid = normalize_motion(points, SEED_MOTION_ALPHAS)
    ours = m.permute(0, 3, 1, 2).reshape(coords.shape)
    for name in ("output.dataset_normalize_with_depth", "output.train_vae_normalize_coordinates"):
        theirs = t[name]
        keep = valid.reshape(coords.shape[0], 1, 1, *coords.shape[3:]).expand_as(ours)
        max_err(f"track norm ({name})", ours[keep], theirs[keep], 1e-5)
        # at invalid frame-0 depths the authors substitute depth 1; more4d masks the track (m = 0, valid False)
        assert not torch.allclose(ours[~keep], torch.nan_to_num(theirs[~keep]))
    assert (~valid).sum() == 3  # the planted 0, NaN and inf depths


@torch.no_grad()
def test_stage1_sampler_five_steps(strag_model, motion_vae):
    t, meta = fixture("sampler")
    pipe = STraGPipeline(tokenizer=None, text_encoder=None, vae=None, motion_vae=motion_vae,
                         transformer=strag_model, motion_encoder=None)
    pipe.set_progress_bar_config(disable=True)
    scheduler = make_scheduler("euler", meta["scheduler"]["config"]["shift"])
    steps = []
    latents, _, done = pipe.denoise(
        t["input.initial_noise"], t["inter.y"], padded_context(t["input.prompt_embeds"]),
        padded_context(t["input.negative_prompt_embeds"]), scheduler=scheduler,
        num_inference_steps=meta["settings"]["num_inference_steps"], guidance_scale=meta["settings"]["guidance_scale"],
        image_embeds=t["input.clip_fea"], ref_latents=t["inter.full_ref"],
        on_step=lambda i, step_t, lat, *_: steps.append(lat) or lat,
    )
    assert done == 5
    max_err("sampler timesteps", scheduler.timesteps, t["sched.timesteps"], 1e-3, 0)
    max_err("sampler sigmas", scheduler.sigmas, t["sched.sigmas"], 1e-6, 0)
    for i, lat in enumerate(steps):
        max_err(f"sampler step {i}", lat, t[f"step.{i}.latents_after"], 1e-4)
    max_err("sampler final latents", latents, t["output.final_latents"], 1e-4)
    video = motion_vae.decode_video(motion_vae.denormalize_trajectory(latents))
    max_err("sampler decoded video", video, t["output.videos_no_normalize"], 1e-4)
    max_err("sampler fp32 adaptor", motion_vae.decode_motion(latents), t["output.recon_video_fp32_adaptor"], 1e-4)
    # the authors' script runs the decoder adaptor in bf16 (`recon_video_bf16_adaptor`); more4d keeps fp32 there
    bf16 = motion_vae.decoder_adaptor.to(torch.bfloat16)(video.to(torch.bfloat16)).float()
    motion_vae.decoder_adaptor.float()
    max_err("sampler bf16 adaptor", bf16, t["output.recon_video_bf16_adaptor"], 0.1, 0)


def test_kohya_lora_merges_into_strag_as_into_any_wan_tree(tmp_path, layout):
    t, meta = fixture("lora_merge")
    save_file(prefixed(t, "lora."), tmp_path / "lora.safetensors")
    model = released.load_released_strag(layout / paths.STRAG_DIR)
    load_lora(model, tmp_path / "lora.safetensors", strict=False)  # the file covers the t2v model's layers only
    merge_lora(model, meta["multiplier"])
    weights = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if "lora_" not in k}
    after = prefixed(t, "after.strag.")
    assert sorted(after) == sorted(meta["touched_strag"])
    for key, value in after.items():
        assert torch.equal(weights[original_to_diffusers_key(key)], value), key


def test_back_projection_and_depth_condition_match_the_inference_script():
    """The script's back-projection is more4d's with its normalised K moved to pixel centres (its grid is
    `linspace(0, 1)` with endpoints: u = j / (W - 1)); its depth conditioning is more4d's `depth_condition`."""
    t, _ = fixture("track_norm")
    H, W = t["output.back_project_coords"].shape[:2]
    K = t["output.infer_intrinsic"]
    K_pixels = torch.tensor([[K[0, 0] * (W - 1), 0, K[0, 2] * (W - 1) + 0.5],
                             [0, K[1, 1] * (H - 1), K[1, 2] * (H - 1) + 0.5], [0, 0, 1]])
    depth = F.interpolate(t["input.depth_lowres"][None, None], (H, W), mode="bilinear", align_corners=False)[0, 0]
    max_err("back-projection", backproject_depth(depth, K_pixels).reshape(H, W, 3), t["output.back_project_coords"],
            1e-5)
    depth = F.interpolate(t["s1f1.input.depth_pred"], t["s1f1.input.image"].shape[-2:], mode="bilinear",
                          align_corners=False)[0, 0]
    max_err("depth condition", depth_condition(depth, valid_depth_mask(depth)), t["s1f1.inter.depth_image"][0, 0, 0],
            1e-6)
