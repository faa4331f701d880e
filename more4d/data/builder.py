"""Build TrajScene clips from your own videos: depth per frame + dense 2D tracks of frame-0 pixels -> 3D tracks.

Depth comes from any `DepthEstimator` (more4d.depth: the tiny net, UniDepth from local weights, or any callable
image `(H, W, 3)` [0, 1] -> `DepthPrediction` or `(depth, K)`). Tracks chain OpenCV dense optical flow (DIS or
Farneback, no weights) from frame to frame; a track is lost for good when forward-backward consistency fails
or it leaves the image. Tracked pixels are lifted with the frame's depth (nearest sample) and K.

Points are in each frame's own camera coordinates: camera motion is not removed (as in the seed's data).
Every clip is written atomically; a failing clip is counted in the summary with its error and never stops the
build.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from more4d.data.formats import TrajClip, write_clip
from more4d.data.index import INDEX_NAME, IndexEntry, entry_for_clip, write_index
from more4d.data.synth import PIXEL_CENTER
from more4d.errors import InputError
from more4d.geometry import DEFAULT_FOV_DEG, intrinsics_from_fov
from more4d.io import read_video

DepthFn = Callable[[torch.Tensor], Any]  # image (H, W, 3) float [0, 1] -> DepthPrediction | (depth, K)
CaptionFn = Callable[[Path], str]


@dataclass(frozen=True)
class BuildConfig:
    """How clips are cut from each video and tracked."""

    num_frames: int = 17
    stride: int = 1  # take every k-th video frame
    clips_per_video: int = 1  # evenly spaced clips per video
    size: tuple[int, int] | None = None  # (H, W): resize to cover, then centre-crop; None keeps the video size
    flow: Literal["dis", "farneback"] = "dis"
    fb_threshold: float = 1.0  # px, forward-backward error above which a track is lost
    fov_deg: float = DEFAULT_FOV_DEG  # vertical FOV when the depth estimator predicts no K
    default_caption: str | None = None  # used when a video has no sidecar .txt (None: that is an error)

    def __post_init__(self) -> None:
        if self.num_frames < 2 or self.stride < 1 or self.clips_per_video < 1:
            raise InputError(f"need num_frames >= 2, stride >= 1, clips_per_video >= 1, got {self.num_frames}, "
                             f"{self.stride}, {self.clips_per_video}")
        if self.flow not in ("dis", "farneback"):
            raise InputError(f"flow must be 'dis' or 'farneback', got {self.flow!r}")
        if self.size is not None and min(self.size) < 16:
            raise InputError(f"size must be at least 16x16, got {self.size}")


@dataclass
class BuildSummary:
    """Result of `build_dataset`: clips written, and (source, error) for every clip that failed."""

    written: list[IndexEntry] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{len(self.written)} clips written, {len(self.failed)} failed"]
        lines += [f"  {name}: {error}" for name, error in self.failed]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# 2D tracking and lifting
# ----------------------------------------------------------------------------------------------------------


def _flow_fn(method: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    import cv2

    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        dis.setFinestScale(0)  # full resolution: small objects matter
        return lambda a, b: dis.calc(a, b, None)
    return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 15, 3, 5, 1.2, 0)


def track_frames(frames: np.ndarray, *, flow: str = "dis", fb_threshold: float = 1.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Dense tracks of every frame-0 pixel by chained optical flow.

    frames: `(T, H, W, 3)` uint8. Returns positions `(T, H*W, 2)` float32 in pixel-index coords (x, y; pixel
    (i, j) starts at (j, i)) and visibility `(T, H*W)` bool (lost for good after a failed forward-backward check
    or leaving the image).
    """
    import cv2

    T, H, W = frames.shape[:3]
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    calc = _flow_fn(flow)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    px, py = xs.copy(), ys.copy()
    alive = np.ones((H, W), bool)
    positions, visible = [np.stack([px, py], -1)], [alive.copy()]
    for t in range(T - 1):
        fwd = calc(grey[t], grey[t + 1])
        bwd = calc(grey[t + 1], grey[t])
        step = cv2.remap(fwd, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        nx, ny = px + step[..., 0], py + step[..., 1]
        back = cv2.remap(bwd, nx, ny, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        fb_error = np.hypot(nx + back[..., 0] - px, ny + back[..., 1] - py)
        inside = (nx >= -0.5) & (nx <= W - 0.5) & (ny >= -0.5) & (ny <= H - 0.5)
        alive &= (fb_error <= fb_threshold) & inside & np.isfinite(fb_error)
        px, py = np.where(alive, nx, px), np.where(alive, ny, py)  # lost tracks stay where they were lost
        positions.append(np.stack([px, py], -1))
        visible.append(alive.copy())
    return np.stack(positions).reshape(T, H * W, 2), np.stack(visible).reshape(T, H * W)


def lift_tracks(positions: np.ndarray, visible: np.ndarray, depth: torch.Tensor, K: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lift 2D tracks `(T, N, 2)` to 3D with per-frame depth `(T, H, W)` (nearest sample) and K `(3, 3)`.

    Returns points `(T, N, 3)` float32 in each frame's camera coords and visibility `(T, N)` (also False where
    depth is invalid). Invisible points keep their last visible position (zeros if never valid).
    """
    T, H, W = depth.shape
    pos = torch.from_numpy(positions).float()
    vis = torch.from_numpy(visible).bool()
    col = pos[..., 0].round().clamp(0, W - 1).long()
    row = pos[..., 1].round().clamp(0, H - 1).long()
    z = depth.float().view(T, -1).gather(1, row * W + col)
    vis = vis & torch.isfinite(z) & (z > 0)
    z = torch.where(vis, z, 0.0)
    u, v = pos[..., 0] + PIXEL_CENTER, pos[..., 1] + PIXEL_CENTER
    points = torch.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)
    for t in range(1, T):  # forward-fill invisible points
        points[t] = torch.where(vis[t, :, None], points[t], points[t - 1])
    return points, vis


def _predict_depth(depth_fn: DepthFn, image: torch.Tensor, fov_deg: float) -> tuple[torch.Tensor, torch.Tensor]:
    out = depth_fn(image)
    depth, K = (out.depth, out.K) if hasattr(out, "depth") else out
    H, W = image.shape[:2]
    depth = torch.as_tensor(depth).float().cpu()
    if depth.shape != (H, W):
        raise InputError(f"depth estimator returned shape {tuple(depth.shape)} for a {H}x{W} image")
    if K is None:
        K = intrinsics_from_fov(fov_deg, H, W)
    return torch.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0), torch.as_tensor(K).float().cpu()


def _fit(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize frames `(T, H, W, 3)` to cover `size` (H, W) and centre-crop."""
    import cv2

    if size is None or frames.shape[1:3] == tuple(size):
        return frames
    H, W = size
    scale = max(H / frames.shape[1], W / frames.shape[2])
    h, w = max(H, round(frames.shape[1] * scale)), max(W, round(frames.shape[2] * scale))
    y0, x0 = (h - H) // 2, (w - W) // 2
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)[y0:y0 + H, x0:x0 + W] for f in frames])


def build_clip(frames: np.ndarray, depth_fn: DepthFn, caption: str, *, fps: float = 8.0,
               config: BuildConfig | None = None, meta: dict[str, Any] | None = None) -> TrajClip:
    """Turn video frames `(T, H, W, 3)` uint8 into a `TrajClip` (depth, 2D tracks, lift)."""
    config = config or BuildConfig()
    frames = _fit(np.ascontiguousarray(frames), config.size)
    positions, visible = track_frames(frames, flow=config.flow, fb_threshold=config.fb_threshold)
    images = torch.from_numpy(frames).float() / 255.0
    predictions = [_predict_depth(depth_fn, img, config.fov_deg) for img in images]
    depth = torch.stack([d for d, _ in predictions])
    K = predictions[0][1]
    points, vis = lift_tracks(positions, visible, depth, K)
    clip = TrajClip(frames=torch.from_numpy(frames), points=points, visibility=vis,
                    colors=images[0].reshape(-1, 3), K=K, depth=depth, caption=caption, fps=fps,
                    meta={"source": "video", "coords": "camera_t", "flow": config.flow, **(meta or {})})
    clip.validate()
    return clip


# ----------------------------------------------------------------------------------------------------------
# Folders of videos
# ----------------------------------------------------------------------------------------------------------


def sidecar_caption(video: Path) -> str:
    """The caption in `<video>.txt` (first non-empty line); `InputError` if missing or empty."""
    txt = video.with_suffix(".txt")
    if not txt.is_file():
        raise InputError(f"no caption file {txt.name!r} beside the video")
    lines = [line.strip() for line in txt.read_text(errors="replace").splitlines() if line.strip()]
    if not lines:
        raise InputError(f"caption file {txt.name!r} is empty")
    return lines[0]


def clip_starts(num_video_frames: int, config: BuildConfig) -> list[int]:
    """Start frames of the clips cut from a video of `num_video_frames` frames."""
    span = (config.num_frames - 1) * config.stride + 1
    if num_video_frames < span:
        raise InputError(f"video has {num_video_frames} frames; a clip needs {span} "
                         f"({config.num_frames} frames at stride {config.stride})")
    last = num_video_frames - span
    n = min(config.clips_per_video, last + 1)
    return sorted({round(i * last / max(1, n - 1)) for i in range(n)}) if n > 1 else [0]


def build_dataset(videos: str | os.PathLike | list[str | os.PathLike], out: str | os.PathLike,
                  depth_fn: DepthFn, *, captions: CaptionFn | None = None, config: BuildConfig | None = None,
                  progress: Callable[[str], None] | None = None) -> BuildSummary:
    """Build clips from a folder of mp4s (or a list of paths) into `out`, with `out/index.jsonl`.

    Clips are named `<video stem>_<k>`. A clip that fails (corrupt or short video, missing caption, depth
    errors, NaNs) is recorded in the summary (also written to `out/build_summary.json`); the rest go on.
    Existing clips in `out` are kept and indexed again.
    """
    config = config or BuildConfig()
    captions = captions or sidecar_caption
    if isinstance(videos, (str, os.PathLike)):
        folder = Path(videos)
        if not folder.is_dir():
            raise InputError(f"videos folder {str(folder)!r} does not exist")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".mp4")
        if not paths:
            raise InputError(f"no .mp4 files in {str(folder)!r}")
    else:
        paths = [Path(p) for p in videos]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = BuildSummary()
    for video in paths:
        try:
            frames, fps = read_video(video)
            caption = captions(video) if captions is not sidecar_caption or config.default_caption is None else (
                _caption_or_default(video, config.default_caption))
            starts = clip_starts(len(frames), config)
        except (InputError, ValueError, OSError, RuntimeError) as exc:
            summary.failed.append((video.name, str(exc)))
            continue
        for k, start in enumerate(starts):
            name = f"{video.stem}_{k}"
            if progress:
                progress(name)
            try:
                target = out / name
                if not target.exists():
                    sub = frames[start:start + (config.num_frames - 1) * config.stride + 1:config.stride]
                    clip = build_clip(sub, depth_fn, caption, fps=fps / config.stride, config=config,
                                      meta={"video": video.name, "start_frame": start, "stride": config.stride})
                    write_clip(clip, target)
                summary.written.append(entry_for_clip(target, out))
            except Exception as exc:  # noqa: BLE001 - any failure of one clip is reported, never fatal
                summary.failed.append((name, f"{type(exc).__name__}: {exc}"))
    write_index(summary.written, out / INDEX_NAME)
    (out / "build_summary.json").write_text(json.dumps(
        {"written": len(summary.written), "failed": [{"clip": n, "error": e} for n, e in summary.failed]}, indent=1))
    return summary


def _caption_or_default(video: Path, default: str) -> str:
    try:
        return sidecar_caption(video)
    except InputError:
        return default
