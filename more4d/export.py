"""Scene4D exports: per-frame PLY (zip), one GLB with a node per frame, the seed's per-frame text, mp4 preview.

Every writer is atomic (temp file + rename) and validates the scene first. PLY and text keep Scene4D's
camera-0 OpenCV coordinates; the GLB is converted to glTF axes (y up, z towards the viewer): (x, -y, -z).
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from more4d.camera import CameraTrajectory
from more4d.errors import InputError
from more4d.geometry import fov_from_intrinsics
from more4d.io import atomic_write, check_output_path, write_video
from more4d.scene import Scene4D

EXPORT_FORMATS = ("ply", "glb", "txt", "mp4")


def _frames(scene: Scene4D, visible_only: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per frame: points `(M, 3)` float32 and colors `(M, 3)` uint8, optionally only the visible tracks."""
    scene.validate()
    points = scene.points.detach().cpu().float().numpy()
    colors = (scene.colors.detach().cpu().clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    visibility = scene.visibility.detach().cpu().numpy()
    return [(points[t][visibility[t]], colors[visibility[t]]) if visible_only else (points[t], colors)
            for t in range(scene.num_frames)]


def _point_cloud(points: np.ndarray, colors: np.ndarray):
    import trimesh

    return trimesh.PointCloud(points, colors=np.concatenate([colors, np.full_like(colors[:, :1], 255)], axis=1))


def export_ply_zip(scene: Scene4D, path: str | os.PathLike, *, visible_only: bool = True) -> Path:
    """Write a zip of binary PLY point clouds `frame_0000.ply ...` (xyz float32 + rgb uint8, OpenCV coords).

    With `visible_only` (default) each frame holds only the tracks visible in that frame.
    """
    frames = _frames(scene, visible_only)
    with atomic_write(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for t, (pts, cols) in enumerate(frames):
            zf.writestr(f"frame_{t:04d}.ply", _point_cloud(pts, cols).export(file_type="ply"))
    return Path(path)


def export_glb(scene: Scene4D, path: str | os.PathLike, *, visible_only: bool = True) -> Path:
    """Write one GLB holding a point-cloud node `frame_0000 ...` per frame, in glTF axes (x, -y, -z)."""
    import trimesh

    frames = _frames(scene, visible_only)
    gl = np.array([1.0, -1.0, -1.0], dtype=np.float32)
    glb = trimesh.Scene()
    for t, (pts, cols) in enumerate(frames):
        glb.add_geometry(_point_cloud(pts * gl, cols), node_name=f"frame_{t:04d}", geom_name=f"frame_{t:04d}")
    data = glb.export(file_type="glb")
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def export_txt_zip(scene: Scene4D, path: str | os.PathLike) -> Path:
    """Write the seed's layout: a zip of `frame_0000.txt ...`, one "x y z r g b" line per track (all H*W
    tracks, row-major pixels, OpenCV camera-0 coordinates, rgb 0-255)."""
    frames = _frames(scene, visible_only=False)
    with atomic_write(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for t, (pts, cols) in enumerate(frames):
            buf = io.StringIO()
            rows = np.concatenate([pts.astype(np.float64), cols.astype(np.float64)], axis=1)
            np.savetxt(buf, rows, fmt=["%.6f", "%.6f", "%.6f", "%d", "%d", "%d"])
            zf.writestr(f"frame_{t:04d}.txt", buf.getvalue())
    return Path(path)


def export_preview_mp4(scene: Scene4D, path: str | os.PathLike, *, mode: str = "disk", progress: bool = False) -> Path:
    """Render the scene from the input camera (identity pose, the scene's FOV) into an H.264 mp4 at scene fps."""
    from more4d.render import render_scene  # lazy: the renderer pulls in optional fast backends

    scene.validate()
    check_output_path(path)  # fail before rendering
    T = scene.num_frames
    trajectory = CameraTrajectory(
        c2w=torch.eye(4).expand(T, 4, 4).clone(),
        fov_deg=torch.full((T,), fov_from_intrinsics(scene.K.cpu(), scene.height)),
        times=torch.arange(T, dtype=torch.float32) / scene.fps,
    )
    out = render_scene(scene, trajectory, mode=mode, progress=progress)
    return write_video(path, out.rgb, fps=scene.fps)


def export_scene(scene: Scene4D, path: str | os.PathLike, format: str) -> Path:
    """Dispatch to the exporter for `format` in `EXPORT_FORMATS`."""
    writers = {"ply": export_ply_zip, "glb": export_glb, "txt": export_txt_zip, "mp4": export_preview_mp4}
    if format not in writers:
        raise InputError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    return writers[format](scene, path)
