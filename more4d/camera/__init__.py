"""Camera paths: keyframes -> per-frame cameras (opencv_c2w, vertical FOV in degrees), presets and JSON I/O."""

from more4d.camera.io import load_camera_path, opencv_to_opengl, opengl_to_opencv, save_camera_path
from more4d.camera.path import CameraPath, CameraTrajectory, Keyframe
from more4d.camera.presets import PRESET_NAMES, PRESETS, look_at, make_preset

__all__ = [
    "PRESETS",
    "PRESET_NAMES",
    "CameraPath",
    "CameraTrajectory",
    "Keyframe",
    "load_camera_path",
    "look_at",
    "make_preset",
    "opencv_to_opengl",
    "opengl_to_opencv",
    "save_camera_path",
]
