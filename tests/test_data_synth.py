"""TrajScene-Synth: determinism, exact geometry of tracks, visibility, captions, sibling clips, config checks."""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import replace

import pytest
import torch

from more4d.data import SynthConfig, generate_batch, generate_clips, generate_siblings, sample_captions
from more4d.data.photo_textures import (
    HELD_OUT_PHOTOS,
    SHORT_SIDE,
    TRAINING_PHOTOS,
    load_photo,
    skimage_data_dir,
)
from more4d.data.synth import CLOSEUP_DEPTH, COLORS, EVERYDAY_NOUNS, MOTIONS, SHAPES, _sample_clip
from more4d.errors import InputError
from more4d.geometry import backproject_depth

TINY = SynthConfig(num_frames=5, height=40, width=48, novel_views=1)


@pytest.fixture(scope="module")
def batch():
    return generate_batch([0, 1, 2, 3], SynthConfig(num_frames=5, height=40, width=48, novel_views=1,
                                                     camera_motion_prob=0.5))


def test_shapes_and_dtypes(batch):
    B, T, H, W, N = 4, 5, 40, 48, 40 * 48
    assert batch.frames.shape == (B, T, H, W, 3) and batch.frames.dtype == torch.uint8
    assert batch.points.shape == (B, T, N, 3) and batch.visibility.shape == (B, T, N)
    assert batch.depth.shape == (B, T, H, W) and batch.colors.shape == (B, N, 3)
    assert batch.novel_frames.shape == (B, 1, T, H, W, 3) and batch.novel_c2w.shape == (B, 1, T, 4, 4)
    assert torch.isfinite(batch.points).all() and batch.visibility[:, 0].all()
    assert torch.equal(batch.c2w[:, 0], torch.eye(4).expand(B, 4, 4))
    assert not torch.allclose(batch.novel_c2w[:, 0, 0], torch.eye(4))
    for clip in batch.clips():
        clip.validate()


def test_deterministic_and_batch_invariant(batch):
    again = generate_clips([2, 0], replace(TINY, camera_motion_prob=0.5), batch_size=1)
    for clip, b in zip(again, (2, 0)):
        assert clip.caption == batch.captions[b]
        assert torch.allclose(clip.points, batch.points[b], atol=1e-5)
        assert torch.equal(clip.visibility, batch.visibility[b])
        assert (clip.frames.int() - batch.frames[b].int()).abs().max() <= 1


def test_frame0_points_are_backprojected_depth(batch):
    for b in range(4):
        expected = backproject_depth(batch.depth[b, 0], batch.K[b])
        assert torch.allclose(batch.points[b, 0], expected, rtol=1e-5, atol=1e-5)


def test_visible_tracks_land_on_matching_surface(batch):
    check_tracks_land_on_matching_surface(batch)


def check_tracks_land_on_matching_surface(batch) -> None:
    """A visible track projects into frame t where the depth map agrees and the texture matches frame 0."""
    K = batch.K[0]
    H, W = batch.depth.shape[2:]
    for b in range(len(batch)):
        for t in (2, 4):
            c2w = batch.c2w[b, t]
            cam = (batch.points[b, t] - c2w[:3, 3]) @ c2w[:3, :3]
            u = (K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2]).floor().long().clamp(0, W - 1)
            v = (K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2]).floor().long().clamp(0, H - 1)
            vis = batch.visibility[b, t]
            z_map = batch.depth[b, t].reshape(-1)[v * W + u]
            rel = ((z_map - cam[:, 2]).abs() / cam[:, 2])[vis]
            assert rel.median() < 1e-2 and (rel < 0.1).float().mean() > 0.97
            color_t = batch.frames[b, t].reshape(-1, 3)[v * W + u].float()
            diff = (color_t - batch.frames[b, 0].reshape(-1, 3).float()).abs().mean(1)[vis]
            assert diff.median() < 3.0


def test_moving_objects_are_occluded_or_leave_view():
    clips = generate_clips(range(4, 12), SynthConfig(num_frames=9, height=32, width=32, novel_views=0))
    assert any(not c.visibility[-1].all() for c in clips)
    assert any(c.meta["camera_motion"] != "static" for c in clips)


def test_captions_name_objects_and_motions():
    config = SynthConfig()
    seen = set()
    for seed in range(60):
        _, caption, meta = _sample_clip(seed, config)
        assert len(caption.split()) <= 32
        for obj in meta["objects"]:
            assert obj["color"] in caption and obj["shape"] in caption and obj["shape"] in SHAPES
            seen.add(obj["motion"])
    assert seen >= set(MOTIONS) - {"static"}


def test_sample_captions_are_the_rendered_clips_captions(batch):
    config = SynthConfig(num_frames=5, height=40, width=48, camera_motion_prob=0.5)
    assert sample_captions(range(4), config) == batch.captions
    with pytest.raises(InputError, match="seed"):
        sample_captions([-1], config)


def test_paper_scale_and_bad_config():
    assert (SynthConfig.paper_scale().num_frames, SynthConfig.paper_scale().height) == (49, 368)
    for kwargs in ({"num_frames": 16}, {"height": 8}, {"max_objects": 5}, {"fov_deg": 0.0}, {"novel_views": -1}):
        with pytest.raises(InputError):
            SynthConfig(**kwargs)
    for seeds in ([-1], ["x"], [1.5], []):
        with pytest.raises(InputError):
            generate_batch(seeds, TINY)


def test_siblings_keep_frame0_and_caption_and_redraw_the_motion():
    config = SynthConfig(num_frames=9, height=32, width=32, novel_views=0, static_prob=0.0)
    seed = next(s for s in range(100) if any(o["motion"] in ("orbit", "spin", "recede")
                                             for o in _sample_clip(s, config)[2]["objects"]))
    clip = generate_batch([seed], config)
    siblings = generate_siblings(seed, 3, config, generator_seed=1)
    assert siblings.captions == clip.captions * 3
    torch.testing.assert_close(siblings.frames[:, 0], clip.frames[:, 0].expand(3, -1, -1, -1))
    torch.testing.assert_close(siblings.points[:, 0], clip.points[:, 0].expand(3, -1, -1))
    motion = siblings.points[:, -1] - siblings.points[:, 0]
    assert not torch.allclose(motion[0], motion[1])
    assert not torch.allclose(motion[0], clip.points[0, -1] - clip.points[0, 0])
    torch.testing.assert_close(generate_siblings(seed, 3, config, generator_seed=1).points, siblings.points)
    torch.testing.assert_close(generate_batch([seed], config).points, clip.points)  # the clip itself is unchanged
    for count in (0, -1, 1.5):
        with pytest.raises(InputError, match="count"):
            generate_siblings(seed, count, config)


PHOTO = SynthConfig(num_frames=5, height=64, width=64, novel_views=1, camera_motion_prob=0.5)


@pytest.fixture(scope="module")
def photo_pair():
    """Seeds 0-2 with procedural patterns only and with a photo on every surface."""
    return generate_batch([0, 1, 2], PHOTO), generate_batch([0, 1, 2], replace(PHOTO, photo_prob=1.0))


def test_photo_prob_zero_renders_as_before():
    """photo_prob=0 renders every clip bit-identically to the pattern-only generator (the held-out evaluation clips
    depend on it): checksums of seed 3."""
    b = generate_batch([3], SynthConfig(num_frames=5, height=64, width=64, novel_views=1))
    assert int(b.frames.long().sum()) == 3866844 and int(b.novel_frames.long().sum()) == 3876901
    assert float(b.depth.double().sum()) == pytest.approx(119305.349635, rel=1e-9)
    assert float(b.points.double().sum()) == pytest.approx(107242.234628, rel=1e-9)
    assert b.metas[0]["photos"] == {}


def test_photos_change_texture_not_geometry(photo_pair):
    plain, photo = photo_pair
    for name in ("depth", "points", "visibility", "K", "c2w", "novel_depth", "novel_c2w"):
        assert torch.equal(getattr(plain, name), getattr(photo, name)), name
    for a, b in zip(photo.captions, plain.captions):  # every object wears a photo: its colour word is gone
        assert a == re.sub(r"\b(an?) (" + "|".join(COLORS) + r") ", "a textured ", b), (a, b)
    changed = (photo.frames.int() - plain.frames.int()).abs().amax(-1) > 8
    assert (changed.flatten(1).float().mean(1) > 0.5).all()
    for meta in photo.metas:
        objects = {f"object{j}" for j in range(len(meta["objects"]))}
        assert set(meta["photos"]) == objects | {"ground", "backdrop"}
        assert set(meta["photos"].values()) <= set(TRAINING_PHOTOS)


def test_photo_clips_are_determined_by_seed(photo_pair):
    _, photo = photo_pair
    config = replace(PHOTO, photo_prob=1.0)
    assert torch.equal(generate_batch([0, 1, 2], config).frames, photo.frames)
    alone = generate_batch([2], config)
    assert (alone.frames[0].int() - photo.frames[2].int()).abs().max() <= 1
    # a fixed number of draws per surface: a lower photo_prob only drops photos, it never swaps them
    half = sample_metas(range(20), replace(PHOTO, photo_prob=0.5))
    full = sample_metas(range(20), config)
    assert all(h["photos"].items() <= f["photos"].items() for h, f in zip(half, full))
    assert 0 < sum(len(h["photos"]) for h in half) < sum(len(f["photos"]) for f in full)


def test_photo_textures_move_with_their_surfaces(photo_pair):
    _, photo = photo_pair
    check_tracks_land_on_matching_surface(photo)


def test_held_out_photos_never_train():
    assert not set(TRAINING_PHOTOS) & set(HELD_OUT_PHOTOS)
    drawn = {name for meta in sample_metas(range(200), replace(PHOTO, photo_prob=1.0))
             for name in meta["photos"].values()}
    assert drawn == set(TRAINING_PHOTOS)
    for name in TRAINING_PHOTOS:
        image = load_photo(name)
        assert min(image.shape[:2]) == SHORT_SIDE and image.shape[2] == 3
        assert 0 <= image.min() and image.max() <= 1


def test_unnamed_subject_names_the_one_moving_object_only():
    """unnamed_prob: a clip in which one object moves says "the <noun> <its motion>"; other clips keep their
    caption, and no clip changes otherwise."""
    config = SynthConfig(num_frames=5, height=32, width=32, novel_views=0)
    named, unnamed = sample_metas(range(60), config), sample_metas(range(60), replace(config, unnamed_prob=1.0))
    plain, renamed = sample_captions(range(60), config), sample_captions(range(60), replace(config, unnamed_prob=1.0))
    changed = 0
    for meta, other, before, after in zip(named, unnamed, plain, renamed):
        assert meta["objects"] == other["objects"] and meta["camera_c2w"] == other["camera_c2w"]
        moving = [o for o in meta["objects"] if o["motion"] != "static"]
        if len(moving) != 1:
            assert after == before
            continue
        changed += 1
        subject, _, rest = after.removeprefix("the ").partition(" ")
        assert subject in EVERYDAY_NOUNS and subject not in COLORS and subject not in SHAPES
        phrase = next(p for p in before.split(" while ")[0].split(" and ") if "stays still" not in p)
        assert rest.split(" while ")[0] == phrase.split(" ", 3)[3]  # the same motion words
        assert (" while " in before) == (" while " in after)
    assert changed >= 10
    torch.testing.assert_close(generate_batch([5], replace(config, unnamed_prob=1.0)).points,
                               generate_batch([5], config).points)
    with pytest.raises(InputError, match="unnamed_prob"):
        SynthConfig(unnamed_prob=2.0)


def test_large_objects_change_only_their_size():
    config = SynthConfig(num_frames=5, height=64, width=64, novel_views=0)
    small, large = generate_batch(range(4), config), generate_batch(range(4), replace(config, large_prob=1.0))
    assert large.captions == small.captions
    assert [m["objects"] for m in large.metas] == [m["objects"] for m in small.metas]
    torch.testing.assert_close(large.c2w, small.c2w)
    near = 5.0  # objects stand at 2.6-5.2 m, the backdrop at 7-11 m
    assert (large.depth[:, 0] < near).float().mean() > 1.3 * (small.depth[:, 0] < near).float().mean()
    check_tracks_land_on_matching_surface(large)
    with pytest.raises(InputError, match="large_prob"):
        SynthConfig(large_prob=-1.0)


def test_closeups_frame_one_photo_wearing_subject_that_alone_moves():
    config = SynthConfig(num_frames=5, height=128, width=128, novel_views=0, photo_prob=0.5, unnamed_prob=1.0)
    far, close = generate_batch(range(6), config), generate_batch(range(6), replace(config, closeup_prob=1.0))
    near = CLOSEUP_DEPTH[1] + 0.1  # the subject's centre is at most this far; other objects stand behind it
    assert (close.depth[:, 0] < near).float().mean() > 0.3 > (far.depth[:, 0] < near).float().mean()
    for meta, caption in zip(close.metas, close.captions):
        assert "object0" in meta["photos"]
        assert all(o["motion"] == "static" for o in meta["objects"][1:])
        if meta["objects"][0]["motion"] != "static":
            assert caption.split(" ")[1] in EVERYDAY_NOUNS  # one thing moves, so users' words name it
    check_tracks_land_on_matching_surface(close)
    with pytest.raises(InputError, match="closeup_prob"):
        SynthConfig(closeup_prob=1.5)


def test_closeup_parts_move_with_the_subject_and_wear_its_photo():
    from more4d.data.synth import _sample_clip

    config = SynthConfig(num_frames=5, height=128, width=128, novel_views=0, photo_prob=0.5, unnamed_prob=1.0,
                         closeup_prob=1.0)
    seeds = range(8)
    whole, parted = generate_batch(seeds, config), generate_batch(seeds, replace(config, part_prob=1.0))
    assert [m["objects"][0] for m in parted.metas] == [m["objects"][0] for m in whole.metas]  # the same subject
    grown = 0
    for b, meta in enumerate(parted.metas):
        parts = [j for j, o in enumerate(meta["objects"]) if o.get("part_of") == 0]
        assert len(parts) == len(meta["objects"]) - 1  # part_prob 1: every other object is a part
        assert all(meta["photos"][f"object{j}"] == meta["photos"]["object0"] for j in parts)
        if meta["objects"][0]["motion"] == "static":
            continue
        assert parted.captions[b].split(" ")[1] in EVERYDAY_NOUNS  # the parts are not named: one thing moves
        # everything that moves, subject and parts, follows the subject's own motion as one body
        params = _sample_clip(meta["seed"], replace(config, part_prob=1.0))[0]
        c, R, s = params["center"][0], params["R"][0], params["scale"][0]
        points = parted.points[b]
        moving = (points - points[:1]).norm(dim=-1).amax(0) > 1e-4
        p0 = points[0, moving] - c[0]
        expected = c[:, None] + (s[:, :1] / s[:1, :1])[:, None] * (p0 @ R[0] @ R.transpose(1, 2))
        torch.testing.assert_close(points[:, moving], expected, atol=2e-3, rtol=0)
        before = whole.points[b]
        grown += int(moving.sum() > (before - before[:1]).norm(dim=-1).amax(0).gt(1e-4).sum() + 50)
    assert grown >= 2  # parts stick out of the subject's outline: more pixels move
    check_tracks_land_on_matching_surface(parted)
    with pytest.raises(InputError, match="part_prob"):
        SynthConfig(part_prob=2.0)


def test_bad_photo_prob_and_missing_scikit_image(monkeypatch):
    for value in (-0.1, 1.5, float("nan")):
        with pytest.raises(InputError, match="photo_prob"):
            SynthConfig(photo_prob=value)

    def no_skimage(package: str):
        raise ModuleNotFoundError(package)

    monkeypatch.setattr(importlib.resources, "files", no_skimage)
    with pytest.raises(InputError, match="pip install scikit-image"):
        skimage_data_dir()


def sample_metas(seeds, config: SynthConfig) -> list[dict]:
    return [_sample_clip(seed, config)[2] for seed in seeds]
