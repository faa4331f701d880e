"""Render a `Scene4D` along a camera trajectory: frame t of the output shows the scene's points at time t."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from more4d.errors import InputError
from more4d.render.splat import FOOTPRINT_PX, Backend, RenderMode, RenderOutput, render_points

if TYPE_CHECKING:
    from more4d.camera import CameraTrajectory
    from more4d.scene import Scene4D


def footprint_radius(points0: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """World radius `(N,)` that makes each frame-0 point cover its own source pixel.

    Args:
        points0: `(N, 3)` frame-0 points in the source camera's OpenCV coordinates.
        K: `(3, 3)` source intrinsics in pixels.

    Returns `FOOTPRINT_PX * z / f` (f = sqrt(fx * fy)); 0 for points without a valid depth, which then
    cover one pixel of the rendering camera.
    """
    z = points0[:, 2].float()
    radius = FOOTPRINT_PX * z / torch.sqrt(K[0, 0] * K[1, 1]).float()
    return torch.where(torch.isfinite(radius) & (z > 0), radius, torch.zeros_like(radius))


def render_scene(
    scene: Scene4D,
    trajectory: CameraTrajectory,
    *,
    height: int | None = None,
    width: int | None = None,
    mode: RenderMode = "disk",
    batch_size: int = 8,
    backend: Backend = "auto",
    device: torch.device | str | None = None,
    progress: bool = False,
) -> RenderOutput:
    """Render every frame of `scene` from the matching camera of `trajectory`.

    Output frame t draws `scene.points[t]` (tracks with `scene.visibility[t]` False are not drawn) from
    `trajectory.c2w[t]` with the vertical FOV `trajectory.fov_deg[t]`. Points are sized by their source
    pixel footprint (`footprint_radius`), so rendering from the input camera leaves no holes.

    Args:
        scene: the 4D scene, T frames of N points.
        trajectory: T cameras (`len(trajectory) == scene.num_frames`; resample the path to T frames first).
        height, width: output size; default the scene's image size.
        mode: "disk" or "gaussian" (see `render_points`).
        batch_size: frames rendered per call (memory vs speed).
        backend: "auto", "torch" or "gsplat" (see `render_points`).
        device: where to render; default the scene's device.
        progress: show a tqdm progress bar.

    Returns:
        `RenderOutput` with rgb `(T, H, W, 3)`, depth, alpha and hole_mask `(T, H, W)`.
    """
    from tqdm.auto import tqdm

    num_frames = scene.num_frames
    if len(trajectory) != num_frames:
        raise InputError(f"the camera trajectory has {len(trajectory)} frames but the scene has {num_frames}: "
                         f"sample the camera path to {num_frames} frames (CameraPath.sample({num_frames}))")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    height = scene.height if height is None else height
    width = scene.width if width is None else width
    device = scene.points.device if device is None else torch.device(device)
    Ks = trajectory.intrinsics(height, width).to(device)
    c2w = trajectory.c2w.to(device=device, dtype=torch.float32)
    radius = footprint_radius(scene.points[0], scene.K).to(device)
    colors = scene.colors.to(device=device, dtype=torch.float32)
    outputs = []
    for start in tqdm(range(0, num_frames, batch_size), desc="render", disable=not progress):
        stop = min(start + batch_size, num_frames)
        points = scene.points[start:stop].to(device=device, dtype=torch.float32)
        visible = scene.visibility[start:stop].to(device)[..., None]
        points = torch.where(visible, points, torch.full_like(points, float("nan")))  # NaN points are not drawn
        outputs.append(render_points(points, colors, c2w[start:stop], Ks[start:stop], height, width,
                                     radius=radius, mode=mode, backend=backend))
    return RenderOutput(*(torch.cat([getattr(o, f) for o in outputs]) for f in ("rgb", "depth", "alpha", "hole_mask")))


def render_video(
    scene: Scene4D,
    trajectory: CameraTrajectory,
    out_dir: str | os.PathLike,
    *,
    fps: float | None = None,
    **kwargs,
) -> tuple[Path, Path]:
    """Render `scene` along `trajectory` into `out_dir/render.mp4` and `out_dir/mask.mp4`.

    The mask video is white where the render has holes (the pixels ViSM inpaints) and black elsewhere.
    `fps` defaults to the scene's; other keyword arguments go to `render_scene`. `out_dir` is created if
    its parent folder exists. Returns (video path, mask path).
    """
    from more4d.io import write_video

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        if not out_dir.parent.is_dir():
            raise InputError(f"output folder {str(out_dir.parent)!r} does not exist (for {str(out_dir)!r})")
        out_dir.mkdir()
    out = render_scene(scene, trajectory, **kwargs)
    fps = scene.fps if fps is None else fps
    video = write_video(out_dir / "render.mp4", out.rgb, fps=fps)
    mask = write_video(out_dir / "mask.mp4", out.hole_mask, fps=fps)
    return video, mask
