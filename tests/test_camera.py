"""Camera paths: spline sampling, presets, more4d/nerfstudio JSON round trips, axis conventions, bad input."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from more4d.camera import (
    PRESET_NAMES,
    CameraPath,
    Keyframe,
    load_camera_path,
    look_at,
    make_preset,
    opencv_to_opengl,
    opengl_to_opencv,
    save_camera_path,
)
from more4d.camera.path import quaternion_to_rotation, rotation_to_quaternion
from more4d.errors import InputError


def _rot(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = math.radians(degrees)
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k


def _pose(axis, degrees, position) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3, :3] = _rot(axis, degrees)
    c2w[:3, 3] = position
    return c2w


@pytest.fixture
def path() -> CameraPath:
    poses = [np.eye(4), _pose((0, 1, 0), 30, (1, 0, 0.5)), _pose((1, 1, 0), -40, (1.5, -0.5, 1)), _pose((0, 0, 1), 90, (0, 0, 2))]
    return CameraPath([Keyframe(p, 50.0 + 5 * i, float(t)) for i, (p, t) in enumerate(zip(poses, (0.0, 1.0, 1.5, 3.0)))], fps=4.0)


def _angle(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    cos = (np.trace(np.swapaxes(Ra, -1, -2) @ Rb, axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def test_quaternion_conversion_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        R = _rot(rng.normal(size=3), rng.uniform(-179, 179))
        np.testing.assert_allclose(quaternion_to_rotation(rotation_to_quaternion(R)), R, atol=1e-12)
    half = np.sqrt(0.5)  # known values fix the convention (xyzw, right-handed), 180 degrees included
    for axis, angle, xyzw in (((0, 0, 1), 90, (0, 0, half, half)), ((1, 0, 0), 180, (1, 0, 0, 0))):
        q = np.asarray(rotation_to_quaternion(_rot(axis, angle)).xyzw)
        np.testing.assert_allclose(q * np.sign(q[np.argmax(np.abs(q))]), xyzw, atol=1e-12)


def test_sampling_passes_through_keyframes(path):
    for k in path.keyframes:
        sub = CameraPath(path.keyframes, fps=path.fps)
        traj = sub.sample(int(round(path.duration * 4)) + 1)  # times i / 4 include every keyframe time
        i = int(np.argmin(np.abs(traj.times.numpy() - k.time)))
        np.testing.assert_allclose(traj.c2w[i].double().numpy(), k.c2w, atol=1e-5)
        assert float(traj.fov_deg[i]) == pytest.approx(k.fov_deg, abs=1e-4)


def test_trajectory_shapes_and_orthonormal(path):
    traj = path.sample(13)
    assert len(traj) == 13 and traj.c2w.shape == (13, 4, 4) and traj.c2w.dtype == torch.float32
    assert traj.fov_deg.shape == (13,) and traj.times[0] == 0 and traj.times[-1] == pytest.approx(3.0)
    R = traj.c2w[:, :3, :3].double()
    torch.testing.assert_close(R.transpose(1, 2) @ R, torch.eye(3, dtype=torch.float64).expand(13, 3, 3), atol=1e-5, rtol=0)
    K = traj.intrinsics(24, 32)
    assert K.shape == (13, 3, 3) and K[0, 1, 1] == pytest.approx(12 / math.tan(math.radians(25)), rel=1e-5)


def test_rotations_are_smooth(path):
    traj = path.sample(121)
    R = traj.c2w[:, :3, :3].double().numpy()
    steps = _angle(R[:-1], R[1:])
    assert steps.max() < 5.0  # no flips: ~160 degrees in all over 120 steps
    accel = np.abs(np.diff(steps))
    assert accel.max() < 0.5  # angular speed changes gradually (C1 spline)


def test_tcb_changes_the_curve(path):
    base = path.sample(31).c2w
    tense = CameraPath(path.keyframes, fps=path.fps, tension=0.8).sample(31).c2w
    assert (base - tense).abs().max() > 1e-3


def test_closed_loop_returns_to_start(path):
    loop = CameraPath(path.keyframes, fps=path.fps, closed=True)
    assert loop.duration == pytest.approx(3.0 + 1.0)  # closing segment: the mean interval
    traj = loop.sample(40)
    nxt = loop.sample(41)
    # the frame after the last one would be the first keyframe again: the loop is seamless
    step_last = (traj.c2w[-1, :3, 3] - traj.c2w[0, :3, 3]).norm()
    step_typical = (traj.c2w[1:, :3, 3] - traj.c2w[:-1, :3, 3]).norm(dim=-1).max()
    assert step_last <= step_typical * 1.5
    assert torch.allclose(nxt.c2w[0], traj.c2w[0])


def test_constant_speed_equalises_steps():
    poses = [np.eye(4), _pose((0, 1, 0), 0, (1.0, 0, 0)), _pose((0, 1, 0), 0, (3.0, 0, 0))]
    kfs = [Keyframe(p, 50.0, t) for p, t in zip(poses, (0.0, 1.0, 2.0))]
    uneven = np.linalg.norm(np.diff(CameraPath(kfs).sample(21).c2w[:, :3, 3].numpy(), axis=0), axis=-1)
    even = np.linalg.norm(np.diff(CameraPath(kfs, constant_speed=True).sample(21).c2w[:, :3, 3].numpy(), axis=0), axis=-1)
    assert uneven.max() / uneven.min() > 2
    assert even.max() / even.min() < 1.05


def test_constant_speed_rotation_only():
    kfs = [Keyframe(_pose((0, 1, 0), a, (0, 0, 0)), 50.0, t) for a, t in ((0, 0.0), (20, 1.0), (60, 2.0))]
    R = CameraPath(kfs, constant_speed=True).sample(21).c2w[:, :3, :3].double().numpy()
    steps = _angle(R[:-1], R[1:])
    assert steps.max() / steps.min() < 1.05


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_start_at_identity_and_scale_with_depth(name):
    a = make_preset(name, num_frames=17, scene_depth=2.0, fov_deg=55.0).sample(17)
    b = make_preset(name, num_frames=17, scene_depth=6.0, fov_deg=55.0).sample(17)
    torch.testing.assert_close(a.c2w[0], torch.eye(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(b.c2w[:, :3, 3], 3.0 * a.c2w[:, :3, 3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.c2w[:, :3, :3], a.c2w[:, :3, :3], atol=1e-5, rtol=0)
    assert a.times[1] == pytest.approx(1 / 8)
    assert (a.fov_deg == 55.0).all()
    moves = (a.c2w - a.c2w[:1]).abs().amax()
    assert (moves > 1e-3) == (name != "static")


def test_preset_bad_input():
    with pytest.raises(InputError, match="unknown camera preset 'zoomy'.*orbit"):
        make_preset("zoomy", num_frames=17, scene_depth=2.0, fov_deg=55.0)
    with pytest.raises(InputError, match="scene_depth"):
        make_preset("orbit", num_frames=17, scene_depth=0.0, fov_deg=55.0)
    with pytest.raises(InputError, match="num_frames"):
        make_preset("orbit", num_frames=0, scene_depth=1.0, fov_deg=55.0)


def test_look_at_identity():
    np.testing.assert_allclose(look_at((0, 0, 0), (0, 0, 5)), np.eye(4), atol=1e-12)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: CameraPath([Keyframe(np.eye(4), 50, 0.0)]), "at least 2 keyframes, got 1"),
    (lambda: CameraPath([]), "at least 2 keyframes, got 0"),
    (lambda: CameraPath([Keyframe(np.eye(4), 50, 1.0), Keyframe(np.eye(4), 50, 1.0)]), "distinct.*1.0"),
    (lambda: Keyframe(np.diag([1.0, 2.0, 1.0, 1.0]), 50, 0.0), "not orthonormal"),
    (lambda: Keyframe(np.diag([1.0, 1.0, -1.0, 1.0]), 50, 0.0), "det"),
    (lambda: Keyframe(np.full((4, 4), np.nan), 50, 0.0), "NaN"),
    (lambda: Keyframe(np.eye(3), 50, 0.0), r"shape \(4, 4\)"),
    (lambda: Keyframe(np.eye(4), 0.0, 0.0), "fov_deg"),
    (lambda: Keyframe(np.eye(4), 50, float("inf")), "time"),
    (lambda: CameraPath([Keyframe(np.eye(4), 50, 0.0), Keyframe(np.eye(4), 50, 1.0)], tension=2.0), "tension"),
    (lambda: CameraPath([Keyframe(np.eye(4), 50, 0.0), Keyframe(np.eye(4), 50, 1.0)]).sample(0), "num_frames"),
])
def test_bad_paths(make, message):
    with pytest.raises(InputError, match=message):
        make()


def test_axis_conversion():
    c2w = _pose((1, 2, 3), 40, (1, 2, 3))
    gl = opencv_to_opengl(c2w)
    np.testing.assert_allclose(gl[:3, 0], c2w[:3, 0])  # x unchanged
    np.testing.assert_allclose(gl[:3, 1], -c2w[:3, 1])  # y up = -y down
    np.testing.assert_allclose(gl[:3, 2], -c2w[:3, 2])  # OpenGL looks along -z
    np.testing.assert_allclose(gl[:3, 3], c2w[:3, 3])
    np.testing.assert_allclose(opengl_to_opencv(gl), c2w)


def test_more4d_json_round_trip(tmp_path, path):
    path.closed, path.tension, path.constant_speed = True, 0.3, True
    out = save_camera_path(path, tmp_path / "p.json", image_size=(24, 32), num_frames=9)
    data = json.loads(out.read_text())
    assert data["format"] == "more4d.camera_path" and data["convention"] == "opencv_c2w"
    assert len(data["frames"]) == 9 and len(data["keyframes"]) == 4
    loaded = load_camera_path(out)
    assert (loaded.closed, loaded.tension, loaded.constant_speed, loaded.fps) == (True, 0.3, True, 4.0)
    torch.testing.assert_close(loaded.sample(9).c2w, path.sample(9).c2w)
    assert os.listdir(tmp_path) == ["p.json"]


def test_nerfstudio_round_trip(tmp_path, path):
    out = save_camera_path(path, tmp_path / "camera_path.json", format="nerfstudio", image_size=(24, 32), num_frames=12)
    data = json.loads(out.read_text())
    assert data["camera_type"] == "perspective" and (data["render_height"], data["render_width"]) == (24, 32)
    assert len(data["camera_path"]) == 12 and data["seconds"] == pytest.approx(12 / 4.0)
    assert len(data["camera_path"][0]["camera_to_world"]) == 16 and len(data["keyframes"][0]["matrix"]) == 16
    first = np.array(data["camera_path"][0]["camera_to_world"]).reshape(4, 4)
    np.testing.assert_allclose(first, np.diag([1.0, -1.0, -1.0, 1.0]), atol=1e-6)  # identity in OpenGL axes
    loaded = load_camera_path(out)
    torch.testing.assert_close(loaded.sample(12).c2w, path.sample(12).c2w, atol=1e-5, rtol=0)
    torch.testing.assert_close(loaded.sample(12).fov_deg, path.sample(12).fov_deg)
    # keyframes alone (no dense camera_path) give back the keyframe poses and timing
    del data["camera_path"]
    (tmp_path / "kf.json").write_text(json.dumps(data))
    kf_path = load_camera_path(tmp_path / "kf.json")
    assert [k.time for k in kf_path.keyframes] == pytest.approx([k.time for k in path.keyframes])
    for a, b in zip(kf_path.keyframes, path.keyframes):
        np.testing.assert_allclose(a.c2w, b.c2w, atol=1e-9)


def test_nerfstudio_old_string_matrices(tmp_path, path):
    """The three.js viewer wrote keyframe matrices as column-major JSON strings with a TIME property."""
    seconds = 3.0
    keyframes = [{
        "matrix": json.dumps(opencv_to_opengl(k.c2w).T.reshape(-1).tolist()),  # column-major
        "fov": k.fov_deg, "aspect": 1.0,
        "properties": json.dumps([["FOV", k.fov_deg], ["NAME", f"Camera {i}"], ["TIME", k.time / seconds]]),
    } for i, k in enumerate(path.keyframes)]
    data = {"keyframes": keyframes, "camera_type": "perspective", "render_height": 24, "render_width": 32,
            "camera_path": [], "fps": 4, "seconds": seconds, "smoothness_value": 0.5, "is_cycle": False, "crop": None}
    (tmp_path / "old.json").write_text(json.dumps(data))
    loaded = load_camera_path(tmp_path / "old.json")
    for a, b in zip(loaded.keyframes, path.keyframes):
        np.testing.assert_allclose(a.c2w, b.c2w, atol=1e-9)
        assert a.time == pytest.approx(b.time)


@pytest.mark.parametrize(("content", "message"), [
    ('{"format": "more4d.camera_path", "version": 1, "keyfr', "not valid JSON"),
    ("[1, 2, 3]", "JSON object"),
    ('{"hello": 1}', "neither a more4d camera path"),
    ('{"format": "more4d.camera_path", "version": 9, "convention": "opencv_c2w", "keyframes": []}', "version 9, newer"),
    ('{"format": "more4d.camera_path", "version": 1, "convention": "opengl_c2w", "keyframes": []}', "convention"),
    ('{"format": "something.else", "version": 1}', "format"),
    ('{"format": "more4d.camera_path", "version": 1, "convention": "opencv_c2w", "keyframes": [{"c2w": 3}]}', "malformed|fov_deg"),
    ('{"camera_type": "fisheye", "camera_path": []}', "fisheye"),
    ('{"version": 3, "camera_path": []}', "version"),
    ('{"camera_path": [{"camera_to_world": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0], "fov": 50}]}', "16 numbers"),
    ('{"camera_path": [{"c2w": [], "fov": 50}]}', "camera_to_world"),
    ('{"keyframes": [{"matrix": "[1, 0, 0", "fov": 50}]}', "matrix string is not valid JSON"),
])
def test_bad_camera_files(tmp_path, content, message):
    f = tmp_path / "bad.json"
    f.write_text(content)
    with pytest.raises(InputError, match=message):
        load_camera_path(f)


def test_camera_file_io_errors(tmp_path, path):
    with pytest.raises(InputError, match="does not exist"):
        load_camera_path(tmp_path / "missing.json")
    with pytest.raises(InputError, match="does not exist"):
        save_camera_path(path, tmp_path / "nope" / "p.json")
    with pytest.raises(InputError, match="image_size"):
        save_camera_path(path, tmp_path / "p.json", format="nerfstudio")
    with pytest.raises(InputError, match="format"):
        save_camera_path(path, tmp_path / "p.json", format="colmap")
    (tmp_path / "single.json").write_text(json.dumps({
        "format": "more4d.camera_path", "version": 1, "convention": "opencv_c2w",
        "keyframes": [{"c2w": np.eye(4).tolist(), "fov_deg": 50, "time": 0}]}))
    with pytest.raises(InputError, match="at least 2 keyframes"):
        load_camera_path(tmp_path / "single.json")
    assert sorted(os.listdir(tmp_path)) == ["single.json"]
