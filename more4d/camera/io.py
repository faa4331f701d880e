"""Camera-path files: more4d's own JSON and nerfstudio's `camera_path.json` (read and write).

more4d format (`convention: opencv_c2w`, vertical FOV in degrees, times in seconds)::

    {"format": "more4d.camera_path", "version": 1, "convention": "opencv_c2w", "fps": 8.0, "closed": false,
     "tension": 0.0, "continuity": 0.0, "bias": 0.0, "constant_speed": false,
     "keyframes": [{"c2w": [[...4x4...]], "fov_deg": 55.0, "time": 0.0}, ...],
     "frames": [{"c2w": ..., "fov_deg": ..., "time": ...}, ...]}          # optional sampled cameras

nerfstudio stores OpenGL camera axes (x right, y up, z backward); converting flips the camera's y and z axes
(c2w @ diag(1, -1, -1, 1)). Its "camera_path" list holds row-major flattened c2w, its current "keyframes" a
row-major "matrix" list, and its older three.js keyframes a *column-major* "matrix" JSON string with a
"properties" string holding the keyframe TIME as a fraction of "seconds". FOVs are vertical degrees.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from more4d.camera.path import CameraPath, CameraTrajectory, Keyframe
from more4d.errors import InputError
from more4d.io import atomic_write

PATH_FORMAT = "more4d.camera_path"
PATH_VERSION = 1
CONVENTION = "opencv_c2w"
GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])  # right-multiplied: flips the camera's y and z axes (self-inverse)
MAX_FILE_BYTES = 64 * 1024 * 1024


def opencv_to_opengl(c2w: np.ndarray) -> np.ndarray:
    """opencv_c2w `(..., 4, 4)` -> OpenGL-camera c2w (same world frame)."""
    return np.asarray(c2w, dtype=np.float64) @ GL_FROM_CV


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """OpenGL-camera c2w `(..., 4, 4)` -> opencv_c2w (same world frame)."""
    return np.asarray(c2w, dtype=np.float64) @ GL_FROM_CV


def _read_json(file: str | os.PathLike) -> dict[str, Any]:
    path = Path(file)
    if not path.is_file():
        raise InputError(f"camera path file {str(path)!r} does not exist")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InputError(f"camera path file {str(path)!r} is larger than {MAX_FILE_BYTES >> 20} MB")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"camera path file {str(path)!r} is not UTF-8 text: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"camera path file {str(path)!r} is not valid JSON (malformed or truncated): "
                         f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    if not isinstance(data, dict):
        raise InputError(f"camera path file {str(path)!r} must hold a JSON object, got {type(data).__name__}")
    return data


def load_camera_path(file: str | os.PathLike | dict[str, Any]) -> CameraPath:
    """Read a more4d or nerfstudio camera-path JSON (auto-detected) into a CameraPath (opencv_c2w)."""
    data = file if isinstance(file, dict) else _read_json(file)
    name = "camera path" if isinstance(file, dict) else f"camera path file {str(file)!r}"
    try:
        if "format" in data:
            return _from_more4d(data, name)
        if "camera_path" in data or "keyframes" in data:
            return _from_nerfstudio(data, name)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{name} is malformed: {type(exc).__name__}: {exc}") from exc
    raise InputError(f"{name} is neither a more4d camera path (no 'format' key) nor a nerfstudio "
                     "camera_path.json (no 'camera_path' or 'keyframes' key)")


def _from_more4d(data: dict[str, Any], name: str) -> CameraPath:
    if data["format"] != PATH_FORMAT:
        raise InputError(f"{name} has format {data['format']!r}, expected {PATH_FORMAT!r}")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(f"{name} has an unknown version {version!r} (expected {PATH_VERSION})")
    if version > PATH_VERSION:
        raise InputError(f"{name} has version {version}, newer than this more4d reads (<= {PATH_VERSION})")
    if data.get("convention") != CONVENTION:
        raise InputError(f"{name} has convention {data.get('convention')!r}, expected {CONVENTION!r}")
    entries = data.get("keyframes") or data.get("frames") or []
    if not isinstance(entries, list):
        raise InputError(f"{name}: 'keyframes' must be a list")
    keyframes = [Keyframe(np.asarray(k["c2w"], dtype=np.float64), float(k["fov_deg"]), float(k["time"]))
                 for k in entries]
    return CameraPath(keyframes, fps=float(data.get("fps", 8.0)), closed=bool(data.get("closed", False)),
                      tension=float(data.get("tension", 0.0)), continuity=float(data.get("continuity", 0.0)),
                      bias=float(data.get("bias", 0.0)), constant_speed=bool(data.get("constant_speed", False)))


def _ns_matrix(value: Any, where: str) -> np.ndarray:
    """A nerfstudio matrix: a row-major list of 16 (or nested 4x4), or a three.js column-major JSON string."""
    column_major = isinstance(value, str)
    if column_major:
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: matrix string is not valid JSON: {exc.msg}") from exc
    arr = np.asarray(value, dtype=np.float64)
    if arr.size != 16:
        raise InputError(f"{where}: expected a 4x4 matrix (16 numbers), got {arr.size} values "
                         "(unsupported nerfstudio camera path version?)")
    arr = arr.reshape(4, 4)
    return opengl_to_opencv(arr.T if column_major else arr)


def _from_nerfstudio(data: dict[str, Any], name: str) -> CameraPath:
    camera_type = str(data.get("camera_type", "perspective")).lower()
    if camera_type != "perspective":
        raise InputError(f"{name}: camera_type {camera_type!r} is not supported (only 'perspective')")
    if "version" in data:
        raise InputError(f"{name}: nerfstudio camera paths carry no 'version'; got version {data['version']!r} "
                         "(unsupported nerfstudio version or not a nerfstudio file)")
    fps = float(data.get("fps", 30.0))
    default_fov = float(data.get("default_fov", 50.0))
    frames = data.get("camera_path") or []
    if not isinstance(frames, list):
        raise InputError(f"{name}: 'camera_path' must be a list")
    if frames:  # the rendered, densely sampled cameras: frame i at time i / fps
        keyframes = []
        for i, cam in enumerate(frames):
            if "camera_to_world" not in cam:
                raise InputError(f"{name}: camera_path[{i}] has no 'camera_to_world' "
                                 "(unsupported nerfstudio camera path version?)")
            c2w = _ns_matrix(cam["camera_to_world"], f"{name}: camera_path[{i}].camera_to_world")
            keyframes.append(Keyframe(c2w, float(cam.get("fov", default_fov)), i / fps))
        return CameraPath(keyframes, fps=fps)
    entries = data.get("keyframes") or []
    if not isinstance(entries, list):
        raise InputError(f"{name}: 'keyframes' must be a list")
    seconds = float(data.get("seconds", max(len(entries) - 1, 1)))
    closed = bool(data.get("is_cycle", False))
    keyframes = []
    elapsed = 0.0
    for i, kf in enumerate(entries):
        c2w = _ns_matrix(kf["matrix"], f"{name}: keyframes[{i}].matrix")
        if "properties" in kf:  # three.js viewer: [["FOV", f], ["NAME", n], ["TIME", fraction]]
            props = dict(json.loads(kf["properties"]) if isinstance(kf["properties"], str) else kf["properties"])
            time = float(props.get("TIME", i / max(len(entries) - 1, 1))) * seconds
        elif "default_transition_sec" in data or kf.get("override_transition_enabled"):
            time = elapsed
            step = kf.get("override_transition_sec") if kf.get("override_transition_enabled") else None
            elapsed += float(step if step is not None else data.get("default_transition_sec", 1.0))
        else:
            time = seconds * i / max(len(entries) - (0 if closed else 1), 1)
        keyframes.append(Keyframe(c2w, float(kf.get("fov", default_fov)), time))
    return CameraPath(keyframes, fps=fps, closed=closed)


def _entry(c2w: np.ndarray, fov_deg: float, time: float) -> dict[str, Any]:
    return {"c2w": np.asarray(c2w, dtype=np.float64).tolist(), "fov_deg": float(fov_deg), "time": float(time)}


def default_num_frames(path: CameraPath) -> int:
    """Frames covering the path at its fps: duration * fps (+1 for open paths, which include the end)."""
    frames = round(path.duration * path.fps)
    return max(frames if path.closed else frames + 1, 2)


def save_camera_path(
    path: CameraPath,
    file: str | os.PathLike,
    *,
    format: Literal["more4d", "nerfstudio"] = "more4d",
    image_size: tuple[int, int] | None = None,
    num_frames: int | None = None,
) -> Path:
    """Write `path` atomically as more4d JSON (keyframes, plus sampled frames if `num_frames`) or as a
    nerfstudio camera_path.json (needs `image_size` = (H, W); samples `num_frames`, default duration * fps)."""
    if not isinstance(path, CameraPath):
        raise InputError(f"path must be a CameraPath, got {type(path).__name__}")
    if format == "more4d":
        data = _to_more4d(path, image_size, num_frames)
    elif format == "nerfstudio":
        if image_size is None:
            raise InputError("image_size=(H, W) is required to write a nerfstudio camera path")
        data = _to_nerfstudio(path, image_size, num_frames or default_num_frames(path))
    else:
        raise InputError(f"format must be 'more4d' or 'nerfstudio', got {format!r}")
    with atomic_write(file) as tmp:
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return Path(file)


def _to_more4d(path: CameraPath, image_size: tuple[int, int] | None, num_frames: int | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format": PATH_FORMAT, "version": PATH_VERSION, "convention": CONVENTION, "fov_convention": "vertical_deg",
        "fps": path.fps, "closed": path.closed, "tension": path.tension, "continuity": path.continuity,
        "bias": path.bias, "constant_speed": path.constant_speed,
        "keyframes": [_entry(k.c2w, k.fov_deg, k.time) for k in path.keyframes],
    }
    if image_size is not None:
        data["image_size"] = [int(image_size[0]), int(image_size[1])]
    if num_frames is not None:
        traj = path.sample(num_frames)
        data["frames"] = [_entry(c, f, t) for c, f, t in zip(traj.c2w.double().numpy(), traj.fov_deg.tolist(),
                                                              traj.times.tolist())]
    return data


def _to_nerfstudio(path: CameraPath, image_size: tuple[int, int], num_frames: int) -> dict[str, Any]:
    height, width = (int(v) for v in image_size)
    if height <= 0 or width <= 0:
        raise InputError(f"image_size must be positive (H, W), got {image_size}")
    aspect = width / height
    traj: CameraTrajectory = path.sample(num_frames)
    intervals = np.diff(path.grid)  # nerfstudio keyframe i lasts until keyframe i + 1 (the last: the loop)
    transitions = list(intervals) if path.closed else [*intervals, float(intervals.mean())]
    return {
        "camera_type": "perspective",
        "render_height": height,
        "render_width": width,
        "fps": path.fps,
        "seconds": num_frames / path.fps,
        "is_cycle": path.closed,
        "smoothness_value": 0.0,
        "default_fov": path.keyframes[0].fov_deg,
        "default_transition_sec": float(intervals.mean()),
        "keyframes": [
            {"matrix": opencv_to_opengl(k.c2w).reshape(-1).tolist(), "fov": k.fov_deg, "aspect": aspect,
             "override_transition_enabled": True, "override_transition_sec": float(dt)}
            for k, dt in zip(path.keyframes, transitions)
        ],
        "camera_path": [
            {"camera_to_world": opencv_to_opengl(c).reshape(-1).tolist(), "fov": float(f), "aspect": aspect}
            for c, f in zip(traj.c2w.double().numpy(), traj.fov_deg.tolist())
        ],
    }
