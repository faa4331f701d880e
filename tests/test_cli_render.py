"""`more4d render` end to end on a test scene: every preset and a nerfstudio camera path -> playable videos."""

from __future__ import annotations

from pathlib import Path

import pytest

from more4d.camera import PRESET_NAMES, make_preset, save_camera_path
from more4d.cli import main
from more4d.io import read_video


def _check_outputs(out: Path, num_frames: int, size: tuple[int, int]) -> None:
    for name in ("render.mp4", "mask.mp4"):
        frames, fps = read_video(out / name)
        assert frames.shape[0] == num_frames and frames.shape[1:3] == size, name
        assert fps > 0


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_render_each_preset(tmp_path, scene, scene_file, preset):
    out = tmp_path / preset
    assert main(["render", scene_file, "--preset", preset, "--render-only", "--out", str(out)]) == 0
    _check_outputs(out, scene.num_frames, scene.image_size)


def test_render_nerfstudio_camera_path(tmp_path, scene, scene_file):
    path = make_preset("orbit", num_frames=scene.num_frames, scene_depth=scene.centroid_depth(), fov_deg=55.0)
    file = tmp_path / "camera_path.json"
    save_camera_path(path, file, format="nerfstudio", image_size=scene.image_size, num_frames=scene.num_frames)
    out = tmp_path / "ns"
    assert main(["render", scene_file, "--camera-path", str(file), "--render-only", "--out", str(out)]) == 0
    _check_outputs(out, scene.num_frames, scene.image_size)


def test_render_bad_camera_path_is_one_line_error(tmp_path, scene_file, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"keyframes": [')
    assert main(["render", scene_file, "--camera-path", str(bad), "--render-only", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]


def test_refused_render_leaves_no_out_folder(tmp_path, scene_file, capsys):
    out = tmp_path / "o"
    assert main(["render", scene_file, "--preset", "orbit", "--render-only", "--height", "-8", "--out", str(out)]) == 2
    assert "error" in capsys.readouterr().err and not out.exists()
