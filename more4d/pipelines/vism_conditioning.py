"""4D-ViSM conditioning: splat render + hole mask along a camera path, packed the way Wan2.1-Fun-InP expects.

One code path serves inference (a Scene4D and a camera path) and training (a TrajClip's ground-truth tracks
rendered from its own or a novel camera, paired with the true frames).

Wan-Fun-InP layout of the 20 condition channels (after the 16 noise channels):
- mask `(B, 4, T_lat, H/8, W/8)`: 1 = rendered (kept), 0 = hole. Per pixel the first frame is repeated 4 times,
  then frames are grouped 4 per latent step (frame 4k-3..4k -> latent step k) and the 4 go to channels;
  spatially resized x1/8 bilinearly (align_corners False), as VideoX-Fun's `resize_mask`;
- masked-render latent `(B, 16, T_lat, H/8, W/8)`: the render in [-1, 1] with holes set to 0, VAE-encoded
  (distribution mode) and normalised by the VAE's `latents_mean` / `latents_std`.

Besides the model: `fill_holes` fills holes in pixel space from their borders (push-pull), and `composite_frames`
puts generated frames back under the render (pixels the render covers kept, a feathered seam).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from more4d.camera import CameraTrajectory
from more4d.errors import InputError
from more4d.geometry import fov_from_intrinsics
from more4d.models.vism import MASK_CHANNELS
from more4d.render import render_scene
from more4d.scene import Scene4D

VAE_SCALE = 8  # spatial compression of the Wan VAE
VAE_TEMPORAL = 4  # temporal compression of the Wan VAE


def latent_num_frames(num_frames: int) -> int:
    """Latent frames of the Wan VAE for `num_frames` = 4k+1 video frames; other counts raise `InputError`."""
    if num_frames < 1 or (num_frames - 1) % VAE_TEMPORAL:
        raise InputError(f"num_frames must be 4k+1 (1, 5, 9, ..., 49), got {num_frames}")
    return (num_frames - 1) // VAE_TEMPORAL + 1


def check_output_size(height: int, width: int, *, multiple: int = 2 * VAE_SCALE) -> None:
    """Raise `InputError` unless the output size is positive and divisible by `multiple` (VAE x patch)."""
    if height <= 0 or width <= 0:
        raise InputError(f"output size must be positive, got height={height}, width={width}")
    if height % multiple or width % multiple:
        raise InputError(f"height and width must be divisible by {multiple} for the ViSM model, "
                         f"got {height}x{width} (use render_only=True for other sizes)")


def pack_mask(hole_mask: torch.Tensor) -> torch.Tensor:
    """Pack a per-frame hole mask onto the latent grid (Wan-Fun-InP).

    Args:
        hole_mask: `(B, T, H, W)` bool, True where no point covers the pixel; T = 4k+1, H and W divisible by 8.
    Returns:
        `(B, 4, T_lat, H/8, W/8)` float32 in [0, 1], 1 where rendered.
    """
    if hole_mask.ndim != 4:
        raise InputError(f"hole_mask must have shape (B, T, H, W), got {tuple(hole_mask.shape)}")
    B, T, H, W = hole_mask.shape
    t_lat = latent_num_frames(T)
    if H % VAE_SCALE or W % VAE_SCALE:
        raise InputError(f"hole_mask height and width must be divisible by {VAE_SCALE}, got {H}x{W}")
    keep = 1.0 - hole_mask.float()
    keep = torch.cat([keep[:, :1].expand(B, MASK_CHANNELS, H, W), keep[:, 1:]], dim=1)  # (B, 4*T_lat, H, W)
    keep = F.interpolate(keep, size=(H // VAE_SCALE, W // VAE_SCALE), mode="bilinear", align_corners=False)
    return keep.view(B, t_lat, MASK_CHANNELS, H // VAE_SCALE, W // VAE_SCALE).transpose(1, 2).contiguous()


def fill_holes(image: torch.Tensor, hole_mask: torch.Tensor) -> torch.Tensor:
    """Fill holes smoothly from their borders by push-pull: masked averages down an image pyramid until nothing
    is missing, then each level's holes take the bilinearly upsampled coarser level. Covered pixels are unchanged.

    Args:
        image: `(..., H, W, C)` float; hole_mask: `(..., H, W)` bool, True = hole. An image that is all hole is
            returned unchanged.
    """
    shape = image.shape
    x = image.reshape(-1, *shape[-3:]).permute(0, 3, 1, 2).float()
    w = (~hole_mask.reshape(-1, 1, *shape[-3:-1])).float()
    levels = [(x, w)]
    while min(x.shape[-2:]) > 1 and bool((w == 0).any()):
        total = F.avg_pool2d(x * w, 2, ceil_mode=True)
        weight = F.avg_pool2d(w, 2, ceil_mode=True)
        x, w = total / weight.clamp_min(1e-8), (weight > 0).float()
        levels.append((x, w))
    for fine_x, fine_w in reversed(levels[:-1]):
        up = F.interpolate(x, size=fine_x.shape[-2:], mode="bilinear", align_corners=False)
        x = fine_w * fine_x + (1 - fine_w) * up
    known = levels[0][1].flatten(1).any(dim=1).view(-1, 1, 1, 1)
    x = torch.where(known, x, levels[0][0])
    return x.permute(0, 2, 3, 1).reshape(shape).to(image.dtype)


def masked_video(render: torch.Tensor, hole_mask: torch.Tensor) -> torch.Tensor:
    """The VAE input: render `(B, T, H, W, 3)` in [0, 1] -> `(B, 3, T, H, W)` in [-1, 1] with holes set to 0."""
    video = render.float() * 2.0 - 1.0
    video = video * (~hole_mask.bool()).unsqueeze(-1)
    return video.permute(0, 4, 1, 2, 3).contiguous()


def composite_frames(frames: torch.Tensor, render: torch.Tensor, hole_mask: torch.Tensor, feather_px: int = 2
              ) -> torch.Tensor:
    """Generated `frames` in the holes, the `render` elsewhere, blended over `feather_px` pixels at the seam.

    Args:
        frames, render: `(..., H, W, 3)`; hole_mask: `(..., H, W)` bool. Pixels further than `feather_px` from a
            hole are the render's exactly.
    """
    hole = hole_mask.reshape(-1, 1, *hole_mask.shape[-2:]).float()
    # weight of the generated frame: 1 in a hole, falling linearly to 0 at feather_px + 1 pixels (Chebyshev) from it
    weight = sum(F.max_pool2d(hole, 2 * k + 1, 1, k) for k in range(feather_px + 1)) / (feather_px + 1)
    weight = weight.reshape(*hole_mask.shape, 1).to(frames.dtype)
    return frames * weight + render.to(frames.dtype) * (1 - weight)


def _latent_stats(vae: torch.nn.Module, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, device=like.device, dtype=like.dtype).view(1, z, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=like.device, dtype=like.dtype).view(1, z, 1, 1, 1)
    return mean, std


def vae_encode(vae: torch.nn.Module, video: torch.Tensor) -> torch.Tensor:
    """`(B, 3, T, H, W)` in [-1, 1] -> normalised latents `(B, 16, T_lat, H/8, W/8)` (distribution mode).

    Runs on `video`'s device (the pipeline's execution device; offload hooks move the VAE there)."""
    z = vae.encode(video.to(dtype=vae.dtype)).latent_dist.mode()
    mean, std = _latent_stats(vae, z)
    return (z - mean) / std


def vae_decode(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents `(B, 16, T_lat, h, w)` -> video `(B, 3, T, 8h, 8w)` in [-1, 1] (on `latents`' device)."""
    latents = latents.to(dtype=vae.dtype)
    mean, std = _latent_stats(vae, latents)
    return vae.decode(latents * std + mean, return_dict=False)[0].clamp(-1, 1)


@dataclass
class ViSMCondition:
    """What the inpainting transformer sees besides noise.

    render: `(B, T, H, W, 3)` float [0, 1]; hole_mask: `(B, T, H, W)` bool (True = hole);
    mask_latents: `(B, 4, T_lat, H/8, W/8)`; masked_latents: `(B, 16, T_lat, H/8, W/8)`.
    """

    render: torch.Tensor
    hole_mask: torch.Tensor
    mask_latents: torch.Tensor
    masked_latents: torch.Tensor

    @property
    def latents(self) -> torch.Tensor:
        """`(B, 20, T_lat, h, w)`: mask | masked-render latent, concatenated after the noise channels."""
        return torch.cat([self.mask_latents.to(self.masked_latents.dtype), self.masked_latents], dim=1)


@torch.no_grad()
def encode_condition(vae: torch.nn.Module, render: torch.Tensor, hole_mask: torch.Tensor) -> ViSMCondition:
    """Pack the mask and VAE-encode the masked render. Shapes as in `ViSMCondition`."""
    if render.ndim != 5 or render.shape[-1] != 3 or render.shape[:4] != hole_mask.shape:
        raise InputError(f"render must be (B, T, H, W, 3) and hole_mask (B, T, H, W) alike, "
                         f"got {tuple(render.shape)} and {tuple(hole_mask.shape)}")
    check_output_size(render.shape[2], render.shape[3])
    mask = pack_mask(hole_mask)
    latents = vae_encode(vae, masked_video(render, hole_mask))
    return ViSMCondition(render, hole_mask, mask, latents)


def render_views(scene: Scene4D, trajectories: Sequence[CameraTrajectory], height: int, width: int,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Splat-render the scene along each trajectory (frame t shows the points at time t).

    Returns render `(B, T, H, W, 3)` float [0, 1] and hole mask `(B, T, H, W)` bool, B = len(trajectories).
    """
    if height <= 0 or width <= 0:
        raise InputError(f"output size must be positive, got height={height}, width={width}")
    renders, holes = [], []
    for traj in trajectories:
        if len(traj) != scene.num_frames:
            raise InputError(f"camera trajectory has {len(traj)} frames but the scene has {scene.num_frames}")
        out = render_scene(scene, traj, height=height, width=width)
        renders.append(out.rgb.float().clamp(0, 1))
        holes.append(out.hole_mask.bool())
    return torch.stack(renders), torch.stack(holes)


def clip_to_scene(clip) -> Scene4D:
    """A TrajClip's ground-truth tracks as a Scene4D (camera-0 coordinates, the clip's K and fps)."""
    T, H, W = clip.frames.shape[:3]
    return Scene4D(points=torch.as_tensor(clip.points, dtype=torch.float32),
                   colors=torch.as_tensor(clip.colors, dtype=torch.float32),
                   visibility=torch.as_tensor(clip.visibility, dtype=torch.bool),
                   K=torch.as_tensor(clip.K, dtype=torch.float32), image_size=(H, W), fps=float(clip.fps),
                   prompt=clip.caption)


def clip_view(clip, view: int | None = None) -> tuple[CameraTrajectory, torch.Tensor]:
    """The camera and true frames of one view of a clip: its own camera (`view=None`) or `clip.novel[view]`.

    Returns the trajectory (T frames) and the target frames `(T, H, W, 3)` uint8.
    """
    T, H = clip.frames.shape[:2]
    if view is None:
        c2w, K, frames = clip.meta.get("camera_c2w"), clip.K, clip.frames
        c2w = torch.eye(4).expand(T, 4, 4) if c2w is None else c2w
    else:
        if not 0 <= view < len(clip.novel):
            raise InputError(f"view must be None (own camera) or in [0, {len(clip.novel)}), got {view}")
        nv = clip.novel[view]
        c2w, K, frames = nv.c2w, nv.K, nv.frames
    c2w = torch.as_tensor(c2w, dtype=torch.float32)
    fov = fov_from_intrinsics(torch.as_tensor(K, dtype=torch.float32), H)
    traj = CameraTrajectory(c2w=c2w, fov_deg=torch.full((T,), fov), times=torch.arange(T) / float(clip.fps))
    return traj, torch.as_tensor(frames)


def training_pair(clip, view: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A ViSM training pair from a TrajClip: render its tracks from one view (holes where tracks are hidden).

    Returns render `(T, H, W, 3)` float [0, 1], hole mask `(T, H, W)` bool and the true frames
    `(T, H, W, 3)` float [0, 1] of that view; `encode_condition` turns a batch of them into model inputs.
    """
    traj, frames = clip_view(clip, view)
    H, W = frames.shape[1:3]
    render, hole = render_views(clip_to_scene(clip), [traj], H, W)
    return render[0], hole[0], frames.float() / 255.0
