"""more4d.eval on random tiny weights (one held-out clip, one step; two photos, five frames): both STraG protocols,
depth edges and tearing in the report, the photo table."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from more4d.data.synth import SynthConfig, generate_batch
from more4d.errors import InputError
from more4d.eval.evaluate import HELD_OUT_SEED_START, evaluate, format_report, prompt_swap, swap_direction
from more4d.eval.metrics import EDGE_MAX_DIST_PX
from more4d.eval.photos import PHOTOS, evaluate_photos, format_photo_report, load_photo
from more4d.weights import get_preset, save_random_tiny


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_random_tiny(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def report(weights):
    return evaluate("tiny", weights, num_clips=1, device="cpu", num_inference_steps=1, vism_steps=1, progress=False)


def test_strag_protocols_end_to_end_and_motion(report):
    s, row = report["strag"], report["clips"][0]
    for key in ("epe", "epe_zero", "epe_mean", "epe_oracle_motion", "motion_epe", "motion_epe_zero",
                "motion_epe_mean"):
        assert math.isfinite(row[key]), key
    for key in ("epe", "epe_zero_motion", "epe_mean_motion", "reduction_vs_zero", "epe_oracle_motion", "motion_epe",
                "motion_epe_zero_motion", "motion_epe_mean_motion", "motion_reduction_vs_zero", "motion_epe_floor"):
        assert math.isfinite(s[key]), key
    assert isinstance(s["pass"], bool) and isinstance(s["end_to_end_pass"], bool)
    assert s["pass"] == (s["motion_epe"] <= 0.6 * s["motion_epe_zero_motion"]
                         and s["motion_epe"] < s["motion_epe_mean_motion"])
    for r in s["per_motion_type"].values():
        assert r["motion_epe"] == s["motion_epe"] and r["motion_epe_zero_motion"] == s["motion_epe_zero_motion"]
    # zero motion in the motion protocol = the mean GT displacement magnitude over visible (t, n)
    H, W = get_preset("tiny").resolution
    T = get_preset("tiny").strag_defaults["num_frames"]
    clip = generate_batch([HELD_OUT_SEED_START], SynthConfig(num_frames=T, height=H, width=W, novel_views=1)).clips()[0]
    gt, vis = clip.points.float(), clip.visibility.bool()
    assert row["motion_epe_zero"] == pytest.approx(float((gt - gt[:1]).norm(dim=-1)[vis].mean()), rel=1e-5)
    guidance = get_preset("tiny").strag_defaults["guidance_scale"]
    assert report["strag_sampler"] == {"num_inference_steps": 1, "guidance_scale": guidance}
    text = format_report(report)
    assert f"sampler: 1 steps, guidance {guidance:g}" in text
    assert "end-to-end EPE" in text and "GT-motion floor" in text and "motion (displacement) EPE" in text
    assert f"a perfect sampler: {s['motion_epe_floor']:.4f}" in text
    # a perfect sampler of this clip's motion beats standing still, and scores above 0 (the caption leaves some open)
    assert 0 < row["motion_epe_floor"] < row["motion_epe_zero"]


def test_vism_fillers_holes_and_whole_frame(report):
    v, row = report["vism"], report["clips"][0]
    assert set(v["fills"]) == {"render", "nearest", "telea", "ns", "pushpull", "model", "model_composite"}
    assert v["default"] == "pushpull" and 0 < v["hole_fraction"] < 1
    for name, f in v["fills"].items():
        assert all(math.isfinite(f[k]) for k in ("hole_psnr", "full_psnr", "hole_ssim")), name
    # composited, the model cannot do worse than itself outside the holes; the raw render is the floor in the holes
    assert v["fills"]["model_composite"]["full_psnr"] >= v["fills"]["model"]["full_psnr"] - 1e-6
    assert v["fills"]["pushpull"]["hole_psnr"] > v["fills"]["render"]["hole_psnr"]
    classical = max(v["fills"]["telea"]["hole_psnr"], v["fills"]["ns"]["hole_psnr"])
    assert v["pass"] == (v["fills"]["pushpull"]["hole_psnr"] > classical)
    assert row["hole_fraction"] == v["hole_fraction"]
    assert "the preset fills them by pushpull" in format_report(report)


def test_depth_edges_and_tearing_against_the_truth(report):
    d, tr, row = report["depth"], report["tearing"], report["clips"][0]
    assert 0 <= d["edge_acc"] <= EDGE_MAX_DIST_PX and 0 <= d["edge_comp"] <= EDGE_MAX_DIST_PX
    assert 0 <= d["discontinuity_gt"] < 0.5 and 0 <= d["discontinuity"] <= 1
    for key in ("last", "mean", "last_gt", "mean_gt"):
        assert tr[key] == row[f"tearing_{key}"] and 0 <= tr[key] < 1, key
        assert tr[f"torn_{key}"] == row[f"torn_{key}"] and 0 <= tr[f"torn_{key}"] < 1, key
    assert tr["torn_last_gt"] < 0.01  # true motion on true depth keeps its surfaces whole
    text = format_report(report)
    assert "edges (iBims-1, px)" in text and f"last frame {100 * tr['last']:.1f}%" in text
    assert f"torn from their surface, last frame {100 * tr['torn_last']:.1f}%" in text


@pytest.fixture(scope="module")
def photo_report(weights):
    return evaluate_photos("tiny", weights, device="cpu", num_inference_steps=1, num_frames=5, progress=False,
                           names=("rocket", "motorcycle_left"))


def test_photo_eval_table(photo_report):
    rows = photo_report["photos"]
    assert [(r["photo"], r["depth"]) for r in rows] == [("rocket", "predicted"), ("motorcycle_left", "predicted"),
                                                        ("motorcycle_left", "ground truth")]
    for r in rows:
        assert len(r["tearing"]) == 5 and r["tearing"][0] < 0.01  # frame 0 is the input
        assert r["tearing_last"] == r["tearing"][-1] and 0 <= r["discontinuity"] <= 1 and 0 <= r["torn_last"] < 1
        assert 0 <= r["moving"] <= 1 and len(r["motion_px"]) == 2 and isinstance(r["follows"], bool)
    assert math.isnan(rows[0]["edge_acc"])  # no ground truth for the rocket
    assert 0 < rows[1]["edge_acc"] <= EDGE_MAX_DIST_PX and 0 < rows[1]["edge_comp"] <= EDGE_MAX_DIST_PX
    assert rows[2]["edge_acc"] == rows[2]["edge_comp"] == 0  # the true depth against itself
    text = format_photo_report(photo_report)
    assert "5 frames, 1 steps" in text and "motorcycle_left  ground truth" in text


@pytest.mark.parametrize("prompt, follows", [("the cat moves left", True), ("the cat moves right", False),
                                             ("the cat moves up", False)])
def test_photo_row_says_whether_the_motion_goes_the_captions_way(prompt, follows):
    """Every pixel of a plane 2 m away shifts 10 px left and 3 px down: the row reports it moving, by (-10, +3) px,
    and following only a caption that asks for motion to the left."""
    from more4d.eval.photos import Photo, photo_row
    from more4d.geometry import backproject_depth, intrinsics_from_fov
    from more4d.scene import Scene4D

    H, W, T = 24, 32, 5
    K = intrinsics_from_fov(55.0, H, W)
    p0 = backproject_depth(torch.full((H, W), 2.0), K)
    shift = torch.tensor([-10.0 / K[0, 0], 3.0 / K[1, 1], 0.0]) * 2.0
    points = p0 + torch.linspace(0, 1, T)[:, None, None] * shift
    scene = Scene4D(points=points, colors=torch.rand(H * W, 3), visibility=torch.ones(T, H * W, dtype=torch.bool),
                    K=K, image_size=(H, W))
    row = photo_row(Photo("plane", prompt, np.zeros((H, W, 3))), scene, "given")
    assert row["moving"] == 1.0 and row["follows"] is follows
    np.testing.assert_allclose(row["motion_px"], [-10.0, 3.0], atol=1e-3)


def test_photo_captions_name_a_direction():
    from more4d.geometry import DIRECTION_AXES

    for prompt in PHOTOS.values():
        assert sum(word in DIRECTION_AXES for word in prompt.split()) == 1, prompt


def test_motorcycle_ground_truth_depth():
    photo = load_photo("motorcycle_left")
    assert photo.image.shape == photo.depth.shape + (3,) and np.isfinite(photo.depth).all()
    assert 2.0 < np.median(photo.depth) < 8.0  # metres: the bike stands a few metres from the camera


def test_eval_photos_are_held_out_of_training():
    from more4d.data.photo_textures import HELD_OUT_PHOTOS

    assert set(PHOTOS) <= set(HELD_OUT_PHOTOS)


def test_photo_eval_names_the_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # `import skimage` raises ImportError
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(InputError, match="pip install scikit-image"):
        evaluate_photos("tiny", "/nonexistent")  # before any weights are read


def test_eval_command_photos_only(monkeypatch, capsys):
    from more4d import cli
    from more4d.eval import evaluate as clips
    from more4d.eval import photos

    fake = {"model": "tiny", "device": "cpu", "seconds": 0.0, "photos": [],
            "sampler": {"num_frames": 5, "num_inference_steps": 1, "guidance_scale": 1.0}}
    monkeypatch.setattr(photos, "evaluate_photos", lambda *a, **k: fake)
    monkeypatch.setattr(clips, "evaluate", lambda *a, **k: pytest.fail("--num-clips 0 runs no clip"))
    assert cli.main(["eval", "--photos", "--num-clips", "0"]) == 0
    assert "more4d eval --photos: model tiny" in capsys.readouterr().out


def test_swap_direction_flips_the_object_word_only():
    assert swap_direction("a red ball moves left") == ("a red ball moves right", 0)
    assert swap_direction("a box moves up while the camera pans left") == ("a box moves down while the camera pans left", 1)
    assert swap_direction("a ball spins while the camera pans left") is None  # camera words do not move tracks
    assert swap_direction("a ball moves left and a box moves right") is None  # ambiguous: two directions


def test_prompt_swap_follows_only_a_flipped_motion():
    from types import SimpleNamespace

    K = torch.tensor([[100.0, 0, 16], [0, 100.0, 16], [0, 0, 1]])
    start = torch.tensor([[0.0, 0.0, 4.0], [0.5, 0.0, 4.0]])

    def tracks(dx: float) -> torch.Tensor:  # (2, N, 3): every track shifted by dx along x at the last frame
        return torch.stack([start, start + torch.tensor([dx, 0.0, 0.0])])

    gt = tracks(0.5)  # moves right
    scene = SimpleNamespace(points=tracks(0.4), K=K)
    flipped = prompt_swap(lambda c: SimpleNamespace(points=tracks(-0.4), K=K), "a ball moves right", scene, gt, K)
    assert flipped["caption"] == "a ball moves left" and flipped["follows"] and flipped["gt"] > 0
    ignored = prompt_swap(lambda c: scene, "a ball moves right", scene, gt, K)
    assert not ignored["follows"]  # the same motion for both captions: the prompt did not steer it
    assert prompt_swap(lambda c: scene, "a ball spins", scene, gt, K) is None


class _RoundTrip(torch.nn.Module):
    """A stand-in motion VAE whose round trip scales the motion by `gain` (1: perfect, 0: decodes no motion)."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.gain, self.dtype, self.device = gain, torch.float32, torch.device("cpu")

    def encode_motion(self, m: torch.Tensor) -> torch.Tensor:
        return m * self.gain

    def decode_motion(self, latents: torch.Tensor) -> torch.Tensor:
        return latents


def test_motion_vae_reconstruction_scores_kept_and_lost_axes():
    from more4d.eval.evaluate import motion_vae_reconstruction, motion_vae_summary

    clip = generate_batch([3], SynthConfig(num_frames=5, height=32, width=32, novel_views=0), "cpu").clips()[0]
    kept, lost = (motion_vae_reconstruction(_RoundTrip(g), clip) for g in (1.0, 0.0))
    assert kept["vae_epe"] < 1e-5 and lost["vae_epe"] > 1e-3
    moves = [r > 0 for r in kept["vae_axis_ref"]]
    assert any(moves)
    for gain, row in ((0.0, kept), (1.0, lost)):  # relative error 0 when kept, 1 when decoded as no motion
        rel = motion_vae_summary([row])["axis_relative_error"]
        assert all(abs(e - gain) < 1e-5 for e, m in zip(rel, moves) if m)


@pytest.mark.parametrize("kwargs", [{"num_clips": 0}, {"floor_samples": 0}])
def test_bad_counts_are_refused_before_loading(kwargs):
    with pytest.raises(InputError, match=next(iter(kwargs))):
        evaluate("tiny", "/nonexistent", **kwargs)
