"""Render a `Scene4D` along a camera trajectory: frame t of the output shows the scene's points at time t."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from more4d.errors import InputError
from more4d.geometry import same_surface
from more4d.render.splat import FOOTPRINT_PX, Backend, RenderMode, RenderOutput, render_points

if TYPE_CHECKING:
    from more4d.camera import CameraTrajectory
    from more4d.scene import Scene4D


TEAR_STRETCH = 3.0  # neighbours whose 3D distance grew over 3x since frame 0 are torn apart: their gap stays a hole
MAX_RADIUS_PX = 12.0  # no point is drawn larger than this, however far its neighbours moved
EDGE_REVEAL_PX = 2.0  # a point beside a depth discontinuity hides once the view parts it this far from the other side


def surface_radius(points: torch.Tensor, points0: torch.Tensor, image_size: tuple[int, int], c2w: torch.Tensor,
                   K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point and frame: the world radius that closes the gaps to grid neighbours of the same surface, and
    whether the point is drawn at all.

    The tracks are the frame-0 pixel grid (row-major, `image_size`). Two 4-neighbours are linked when their
    frame-0 depths put them on one surface (`more4d.geometry.same_surface`) and their 3D distance has not grown more
    than `TEAR_STRETCH` times. Each point's screen radius in the rendering camera is `FOOTPRINT_PX` times the largest
    screen distance to a linked neighbour (at least `FOOTPRINT_PX`, at most `MAX_RADIUS_PX`): a slanted or receding
    surface stays closed. A point next to a depth discontinuity is dropped once the view pulls it more than
    `EDGE_REVEAL_PX` from its neighbour across the edge: what the input never saw is a hole for 4D-ViSM to fill,
    not a curtain of stretched points. From the input camera grid neighbours are 1 px apart, so every point is
    drawn with radius `FOOTPRINT_PX` and the render is exact.

    Args:
        points: `(B, N, 3)` points of B frames; NaN for points that are not drawn.
        points0: `(N, 3)` frame-0 points. image_size: `(H, W)` with H * W = N.
        c2w: `(B, 4, 4)` rendering cameras (OpenCV). K: `(B, 3, 3)` their intrinsics in pixels.
    Returns:
        radius `(B, N)` world units, drawn `(B, N)` bool.
    """
    height, width = image_size
    B, N, _ = points.shape
    if height * width != N:
        raise InputError(f"image_size {tuple(image_size)} does not match {N} tracks")
    w2c = torch.linalg.inv(c2w.float())
    cam = points @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]  # (B, N, 3)
    z = cam[..., 2]
    uv = cam[..., :2] / z[..., None].clamp_min(1e-6) * torch.stack([K[:, 0, 0], K[:, 1, 1]], -1)[:, None]
    grid_uv = uv.view(B, height, width, 2)
    spacing = torch.zeros(B, height, width, device=points.device)
    revealed = torch.zeros(B, height, width, dtype=torch.bool, device=points.device)
    for dim, a, b, same, linked in _neighbour_pairs(points, points0, image_size):
        gap = torch.nan_to_num((grid_uv[(slice(None), *a)] - grid_uv[(slice(None), *b)]).norm(dim=-1), nan=0.0)
        pair_spacing = torch.where(linked, gap, 0.0)
        pair_revealed = ~same & (gap > EDGE_REVEAL_PX)
        for pad in _pair_pads(dim):  # credit each pair to both of its points
            spacing = torch.maximum(spacing, F.pad(pair_spacing, pad))
            revealed |= F.pad(pair_revealed, pad)
    radius_px = (FOOTPRINT_PX * spacing.view(B, N)).clamp(FOOTPRINT_PX, MAX_RADIUS_PX)
    radius = radius_px * z / torch.sqrt(K[:, 0, 0] * K[:, 1, 1])[:, None]
    drawn = torch.isfinite(radius) & (z > 0) & ~revealed.view(B, N)
    return torch.where(drawn, radius, torch.zeros_like(radius)), drawn


def torn_pixels(points: torch.Tensor, points0: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """`(B, H, W)` bool: the frame-0 pixels that, in each of B frames `points (B, N, 3)`, have parted from a grid
    neighbour on their own surface: their 3D distance grew more than `TEAR_STRETCH` times since `points0 (N, 3)`.
    Seen from any camera the renderer leaves such a gap open; unlike the holes a view shows, which also mark what
    moving surfaces uncover, these are tears alone."""
    height, width = image_size
    torn = torch.zeros(points.shape[0], height, width, dtype=torch.bool, device=points.device)
    for dim, _, _, same, linked in _neighbour_pairs(points, points0, image_size):
        for pad in _pair_pads(dim):
            torn |= F.pad(same & ~linked, pad)
    return torn


def _neighbour_pairs(points: torch.Tensor, points0: torch.Tensor, image_size: tuple[int, int]
                     ) -> Iterator[tuple[int, tuple[slice, ...], tuple[slice, ...], torch.Tensor, torch.Tensor]]:
    """For vertical, then horizontal grid neighbours (`dim` 1, 2 of `(B, H, W)`): the slices `a`, `b` of `(H, W)`
    that pick each pair's first and second pixel, whether the pair is on one surface at frame 0 `(H, W')` and
    whether it is still linked in each frame `(B, H', W')` (one surface, stretched at most `TEAR_STRETCH` times)."""
    height, width = image_size
    B, N, _ = points.shape
    if height * width != N:
        raise InputError(f"image_size {tuple(image_size)} does not match {N} tracks")
    grid_p = points.view(B, height, width, 3)
    z0, p0 = points0[:, 2].view(height, width), points0.view(height, width, 3)
    for dim in (1, 2):
        n = (height, width)[dim - 1] - 1
        a = (slice(None),) * (dim - 1) + (slice(0, n),)
        b = (slice(None),) * (dim - 1) + (slice(1, n + 1),)
        same = same_surface(z0[a], z0[b])
        rest = (p0[a] - p0[b]).norm(dim=-1)
        moved = (grid_p[(slice(None), *a)] - grid_p[(slice(None), *b)]).norm(dim=-1)
        yield dim, a, b, same, same & (moved <= TEAR_STRETCH * rest.clamp_min(1e-9))


def _pair_pads(dim: int) -> tuple[list[int], list[int]]:
    """F.pad arguments that align a pair tensor (one shorter along `dim`) with its first, then its second point."""
    first, second = [0, 0, 0, 0], [0, 0, 0, 0]
    first[2 * (2 - dim) + 1] = 1
    second[2 * (2 - dim)] = 1
    return first, second


def trajectory_intrinsics(scene: Scene4D, trajectory: CameraTrajectory, height: int, width: int) -> torch.Tensor:
    """K `(T, 3, 3)` of each camera: the scene's own K at the output size (its principal point and pixel aspect,
    which a crop can shift off the centre), zoomed by the camera's vertical FOV relative to the scene's. A camera
    at the scene's FOV sees exactly through the input camera's K, so frame 0 of a path that starts there is the
    input image."""
    from more4d.geometry import fov_from_intrinsics, resize_intrinsics

    K = resize_intrinsics(scene.K.float().cpu(), scene.image_size, (height, width))
    half = torch.deg2rad(torch.tensor(fov_from_intrinsics(K, height) / 2.0, dtype=torch.float64))
    zoom = (torch.tan(half) / torch.tan(torch.deg2rad(trajectory.fov_deg.double().cpu()) / 2)).float()
    Ks = K.expand(len(zoom), 3, 3).clone()
    Ks[:, 0, 0] *= zoom
    Ks[:, 1, 1] *= zoom
    return Ks


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
    `trajectory.c2w[t]` with the vertical FOV `trajectory.fov_deg[t]`. Points are sized to close the gaps to
    their neighbours on the same surface (`surface_radius`): rendering from the input camera leaves no holes, and
    holes elsewhere mark depth discontinuities, torn motion and what the input never saw.

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
    Ks = trajectory_intrinsics(scene, trajectory, height, width).to(device)
    c2w = trajectory.c2w.to(device=device, dtype=torch.float32)
    points0 = scene.points[0].to(device=device, dtype=torch.float32)
    colors = scene.colors.to(device=device, dtype=torch.float32)
    outputs = []
    for start in tqdm(range(0, num_frames, batch_size), desc="render", disable=not progress):
        stop = min(start + batch_size, num_frames)
        points = scene.points[start:stop].to(device=device, dtype=torch.float32)
        visible = scene.visibility[start:stop].to(device)[..., None]
        points = torch.where(visible, points, torch.full_like(points, float("nan")))  # NaN points are not drawn
        radius, drawn = surface_radius(points, points0, scene.image_size, c2w[start:stop], Ks[start:stop])
        points = torch.where(drawn[..., None], points, torch.full_like(points, float("nan")))
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
