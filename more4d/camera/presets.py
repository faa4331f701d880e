"""Camera-path presets, scaled by the scene's centroid depth; every preset starts at the input camera (identity).

Axes are OpenCV (x right, y down, z forward); the scene centroid is taken at (0, 0, scene_depth).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from more4d.camera.path import CameraPath, Keyframe
from more4d.errors import InputError

_DOWN = np.array([0.0, 1.0, 0.0])  # OpenCV world "down" = camera-0 +y


def look_at(position: np.ndarray, target: np.ndarray, down: np.ndarray = _DOWN) -> np.ndarray:
    """opencv_c2w `(4, 4)` of a camera at `position` looking at `target`, its y axis towards `down`."""
    position, target = np.asarray(position, dtype=np.float64), np.asarray(target, dtype=np.float64)
    z = target - position
    z /= np.linalg.norm(z)
    x = np.cross(down, z)
    x /= np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    c2w[:3, 3] = position
    return c2w


def _rotation(axis: str, degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    c2w = np.eye(4)
    c2w[i, i], c2w[i, j], c2w[j, i], c2w[j, j] = c, -s, s, c
    return c2w


def _translation(x: float, y: float, z: float) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3, 3] = (x, y, z)
    return c2w


# Each builder maps scene depth d -> (poses, closed); the poses are spread evenly in time.
def _static(d: float):
    return [np.eye(4), np.eye(4)], False


def _dolly(d: float):
    return [_translation(0, 0, 0), _translation(0, 0, 0.25 * d), _translation(0, 0, 0)], False


def _circle(d: float):
    r, centroid = 0.08 * d, np.array([0.0, 0.0, d])
    angles = np.linspace(0.0, 2 * math.pi, 6, endpoint=False)
    return [look_at((r * (math.cos(a) - 1), r * math.sin(a), 0.0), centroid) for a in angles], True


def _arc(d: float, max_deg: float):
    centroid = np.array([0.0, 0.0, d])
    poses = []
    for a in np.radians(np.linspace(0.0, max_deg, 5)):
        poses.append(look_at(centroid + d * np.array([math.sin(a), 0.0, -math.cos(a)]), centroid))
    return poses, False


def _spiral(d: float):
    r, centroid = 0.08 * d, np.array([0.0, 0.0, d])
    angles = np.linspace(0.0, 2 * math.pi, 9)
    return [look_at((r * (math.cos(a) - 1), r * math.sin(a), 0.3 * d * a / (2 * math.pi)), centroid)
            for a in angles], False


def _mix(d: float):
    centroid = np.array([0.0, 0.0, d])
    return [np.eye(4), look_at((0.12 * d, -0.04 * d, 0.15 * d), centroid),
            look_at((-0.1 * d, -0.06 * d, 0.25 * d), centroid), look_at((-0.05 * d, 0.0, 0.1 * d), centroid)], False


PRESETS: dict[str, tuple[str, Callable[[float], tuple[list[np.ndarray], bool]]]] = {
    "static": ("the input camera, still", _static),
    "dolly": ("move forward a quarter of the scene depth, then back", _dolly),
    "circle": ("small circular translation (loop) looking at the scene centroid", _circle),
    "orbit": ("arc 20 degrees to the right around the scene centroid", lambda d: _arc(d, 20.0)),
    "anti_orbit": ("arc 20 degrees to the left around the scene centroid", lambda d: _arc(d, -20.0)),
    "roll": ("roll 20 degrees about the viewing axis, then back", lambda d: (
        [np.eye(4), _rotation("z", 20.0), np.eye(4)], False)),
    "pan": ("turn 20 degrees to the right in place", lambda d: ([np.eye(4), _rotation("y", 10.0), _rotation("y", 20.0)], False)),
    "truck": ("move right by 0.3 x the scene depth", lambda d: ([np.eye(4), _translation(0.3 * d, 0, 0)], False)),
    "pedestal": ("move up by 0.2 x the scene depth", lambda d: ([np.eye(4), _translation(0, -0.2 * d, 0)], False)),
    "spiral": ("circle while moving forward, looking at the scene centroid", _spiral),
    "mix": ("a mixture: dolly in with truck, pedestal and re-aiming at the centroid", _mix),
}
PRESET_NAMES: tuple[str, ...] = tuple(PRESETS)


def make_preset(name: str, *, num_frames: int, scene_depth: float, fov_deg: float, fps: float = 8.0) -> CameraPath:
    """A preset camera path starting at the identity c2w, lasting `num_frames` frames at `fps`.

    `sample(num_frames)` on the result gives one camera per scene frame (times i / fps).
    """
    if name not in PRESETS:
        raise InputError(f"unknown camera preset {name!r}; choose one of: {', '.join(PRESET_NAMES)}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise InputError(f"num_frames must be an int >= 1, got {num_frames!r}")
    if not (math.isfinite(scene_depth) and scene_depth > 0):
        raise InputError(f"scene_depth must be a positive number (metres), got {scene_depth}")
    if not (math.isfinite(fps) and fps > 0):
        raise InputError(f"fps must be > 0, got {fps}")
    poses, closed = PRESETS[name][1](float(scene_depth))
    if closed:  # the loop's closing segment lasts one interval: num_frames frames go once round
        times = np.arange(len(poses)) * (num_frames / fps) / len(poses)
    else:
        times = np.linspace(0.0, max(num_frames - 1, 1) / fps, len(poses))
    keyframes = [Keyframe(c2w, fov_deg, float(t)) for c2w, t in zip(poses, times)]
    return CameraPath(keyframes, fps=fps, closed=closed)
