"""Scene4D: validation, pickle-free save/load, versioning, atomic writes."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from more4d.errors import InputError
from more4d.scene import Scene4D
from more4d.testing import make_test_scene


def test_properties_and_depth(scene):
    assert (scene.num_frames, scene.num_points, scene.height, scene.width) == (5, 24 * 32, 24, 32)
    assert scene.depth0.shape == (24, 32)
    assert 2.0 < scene.centroid_depth() < 6.0
    scene.validate()


def test_builder_is_deterministic_and_moves():
    a, b, c = make_test_scene(seed=1), make_test_scene(seed=1), make_test_scene(seed=2)
    assert torch.equal(a.points, b.points) and not torch.equal(a.points, c.points)
    moved = (a.points[-1] - a.points[0]).norm(dim=-1)
    assert (moved > 1e-3).any() and (moved < 1e-9).any()  # blob moves, backdrop is static
    assert (~a.visibility[1:]).any() and a.visibility[0].all()


def test_save_load_round_trip(tmp_path, scene):
    scene.metadata["steps"] = 4
    path = scene.save(tmp_path / "s.safetensors")
    loaded = Scene4D.load(path)
    for name in ("points", "colors", "visibility", "K"):
        assert torch.equal(getattr(loaded, name), getattr(scene, name)), name
    assert loaded.image_size == scene.image_size and loaded.fps == scene.fps
    assert loaded.prompt == scene.prompt and loaded.metadata == scene.metadata
    assert os.listdir(tmp_path) == ["s.safetensors"]  # no temp files left


def test_file_is_pickle_free_with_json_header(scene_file):
    from safetensors import safe_open

    with safe_open(scene_file, framework="pt") as f:
        header = json.loads(f.metadata()["more4d"])
    assert header["format"] == "more4d.scene4d" and header["version"] == 1
    assert header["image_size"] == [24, 32] and len(header["K"]) == 3
    assert b"\x80\x04" not in open(scene_file, "rb").read(16)  # not a pickle


def _with_header(tmp_path, scene_file, **changes):
    from safetensors import safe_open

    with safe_open(scene_file, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = json.loads(f.metadata()["more4d"])
    header.update(changes)
    out = tmp_path / "edited.safetensors"
    save_file(tensors, str(out), metadata={"more4d": json.dumps(header)})
    return out


@pytest.mark.parametrize(("changes", "message"), [
    ({"version": 2}, "newer"),
    ({"version": "one"}, "unknown version"),
    ({"format": "other.thing"}, "not a more4d scene"),
    ({"K": [[1, 0]]}, "K"),
])
def test_load_rejects_bad_headers(tmp_path, scene_file, changes, message):
    with pytest.raises(InputError, match=message):
        Scene4D.load(_with_header(tmp_path, scene_file, **changes))


def test_load_rejects_foreign_and_missing_files(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(InputError, match="no 'more4d' header"):
        Scene4D.load(foreign)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(InputError, match="not a more4d scene file"):
        Scene4D.load(junk)
    with pytest.raises(InputError, match="does not exist"):
        Scene4D.load(tmp_path / "missing.safetensors")


def _broken(scene, **changes):
    return dataclasses.replace(scene, **changes)


@pytest.mark.parametrize(("make", "message"), [
    (lambda s: _broken(s, points=s.points.clone().index_fill_(1, torch.tensor([3]), float("nan"))), "NaN or infinite"),
    (lambda s: _broken(s, points=s.points.clone().index_fill_(1, torch.tensor([3]), float("inf"))), "NaN or infinite"),
    (lambda s: _broken(s, points=torch.zeros(0, 0, 3), colors=torch.zeros(0, 3),
                       visibility=torch.zeros(0, 0, dtype=torch.bool), image_size=(0, 0)), "image_size|empty"),
    (lambda s: _broken(s, points=torch.zeros(5, 0, 3)), "empty"),
    (lambda s: _broken(s, points=s.points[:, :-1]), "H\\*W"),
    (lambda s: _broken(s, colors=s.colors[:-1]), "colors must have shape"),
    (lambda s: _broken(s, colors=s.colors * 2), r"\[0, 1\]"),
    (lambda s: _broken(s, visibility=s.visibility[:-1]), "visibility"),
    (lambda s: _broken(s, visibility=s.visibility.float()), "visibility"),
    (lambda s: _broken(s, K=s.K * torch.tensor([[0.0], [1.0], [1.0]])), "focal"),
    (lambda s: _broken(s, K=-s.K), "focal"),
    (lambda s: _broken(s, fps=0.0), "fps"),
])
def test_validate_rejects(scene, make, message):
    with pytest.raises(InputError, match=message):
        make(scene).validate()


def test_save_is_atomic_and_checks_paths(tmp_path, scene):
    bad = _broken(scene, points=torch.full_like(scene.points, float("nan")))
    with pytest.raises(InputError):
        bad.save(tmp_path / "bad.safetensors")
    unserialisable = _broken(scene, metadata={"x": object()})
    with pytest.raises(InputError, match="JSON"):
        unserialisable.save(tmp_path / "meta.safetensors")
    assert os.listdir(tmp_path) == []
    with pytest.raises(InputError, match="does not exist"):
        scene.save(tmp_path / "no" / "dir" / "s.safetensors")


def test_save_into_read_only_folder(tmp_path, scene, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:  # root ignores folder permissions: let os.access report what a user would see
        monkeypatch.setattr("more4d.io.os.access", lambda path, mode: False)
    try:
        with pytest.raises(InputError, match="not writable"):
            scene.save(ro / "s.safetensors")
    finally:
        ro.chmod(0o700)
    assert os.listdir(ro) == []


def test_centroid_depth_ignores_invalid_and_scales(scene):
    scaled = _broken(scene, points=scene.points * 3.0)
    assert scaled.centroid_depth() == pytest.approx(3.0 * scene.centroid_depth(), rel=1e-6)
    behind = _broken(scene, points=-scene.points.abs())
    with pytest.raises(InputError, match="in front of the camera"):
        behind.centroid_depth()
