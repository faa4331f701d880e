"""Scene4D exports: PLY zip, GLB, seed text, mp4 preview; all atomic."""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest
import torch
import trimesh

from more4d.errors import InputError
from more4d.export import export_glb, export_ply_zip, export_preview_mp4, export_scene, export_txt_zip
from more4d.io import read_video


def _rgb255(scene) -> np.ndarray:
    return (scene.colors.numpy() * 255.0 + 0.5).astype(np.uint8)


def test_ply_zip(tmp_path, scene):
    out = export_ply_zip(scene, tmp_path / "s.zip")
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert names == [f"frame_{t:04d}.ply" for t in range(5)]
        for t, name in enumerate(names):
            cloud = trimesh.load(io.BytesIO(zf.read(name)), file_type="ply")
            vis = scene.visibility[t].numpy()
            np.testing.assert_allclose(cloud.vertices, scene.points[t].numpy()[vis], atol=1e-6)
            expected = _rgb255(scene)[vis]
            np.testing.assert_array_equal(cloud.colors[:, :3], expected)
    all_points = export_ply_zip(scene, tmp_path / "all.zip", visible_only=False)
    with zipfile.ZipFile(all_points) as zf:
        assert len(trimesh.load(io.BytesIO(zf.read("frame_0004.ply")), file_type="ply").vertices) == scene.num_points


def test_glb_has_a_node_per_frame(tmp_path, scene):
    out = export_glb(scene, tmp_path / "s.glb")
    loaded = trimesh.load(out, file_type="glb")
    assert sorted(loaded.graph.nodes_geometry) == [f"frame_{t:04d}" for t in range(5)]
    cloud = loaded.geometry["frame_0002"]
    expected = scene.points[2].numpy()[scene.visibility[2].numpy()] * np.array([1, -1, -1])  # glTF axes
    np.testing.assert_allclose(np.sort(cloud.vertices, axis=0), np.sort(expected, axis=0), atol=1e-5)


def test_txt_zip_matches_seed_layout(tmp_path, scene):
    out = export_txt_zip(scene, tmp_path / "s.zip")
    with zipfile.ZipFile(out) as zf:
        assert len(zf.namelist()) == 5
        rows = np.loadtxt(io.StringIO(zf.read("frame_0003.txt").decode()))
    assert rows.shape == (scene.num_points, 6)
    np.testing.assert_allclose(rows[:, :3], scene.points[3].numpy(), atol=1e-5)
    np.testing.assert_array_equal(rows[:, 3:], _rgb255(scene))


def test_preview_mp4(tmp_path, scene):
    out = export_preview_mp4(scene, tmp_path / "s.mp4")
    frames, fps = read_video(out)
    assert frames.shape == (5, 24, 32, 3) and fps == pytest.approx(scene.fps)
    # the input camera sees the scene without holes: the first frame resembles the colours
    target = (scene.colors.reshape(24, 32, 3).numpy() * 255)
    assert np.abs(frames[0].astype(float) - target).mean() < 25


def test_exports_are_atomic_and_validate(tmp_path, scene):
    bad = scene.to("cpu")
    bad.points = torch.full_like(bad.points, float("nan"))
    for fmt in ("ply", "glb", "txt", "mp4"):
        with pytest.raises(InputError, match="NaN"):
            export_scene(bad, tmp_path / f"bad.{fmt}", fmt)
        with pytest.raises(InputError, match="does not exist"):
            export_scene(scene, tmp_path / "missing" / f"x.{fmt}", fmt)
    with pytest.raises(InputError, match="format"):
        export_scene(scene, tmp_path / "x.obj", "obj")
    assert os.listdir(tmp_path) == []
