"""Exact metrics on synthetic ground truth: 3D track end-point error (of points or of displacements), depth
AbsRel / delta1, PSNR / SSIM; and what tears a scene, measurable on real photos too: tearing (holes at the input
camera over time), surface tears (neighbours on one surface pulled apart), depth discontinuities (where the renderer
opens holes) and the iBims-1 depth-boundary errors.

The tensor metrics take arbitrary leading batch dims and return one value per leading index (a tensor of that
shape; a 0-d tensor without batch dims). Masks select the pixels/points that count; an empty selection gives NaN
(never a silent 0). Inputs are not modified; computation is in float32.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from more4d.errors import InputError

if TYPE_CHECKING:
    from more4d.scene import Scene4D

# iBims-1 depth-boundary errors (Koch et al. 2018): Canny on the normalised map, sigma sqrt(2), hysteresis 0.1 / 0.2
# on the unnormalised 3x3 Sobel gradient magnitude (scikit-image's convention), distances truncated at 10 px
EDGE_SIGMA = math.sqrt(2.0)
EDGE_LOW, EDGE_HIGH = 0.1, 0.2
EDGE_MAX_DIST_PX = 10.0
_SOBEL_SCALE = 4096.0  # float gradients -> the int16 derivatives cv2.Canny takes (|Sobel| <= 4 on a [0, 1] map)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    mask = mask.to(values.dtype)
    total = mask.sum(dim=dims)
    out = (values * mask).sum(dim=dims) / total.clamp_min(1.0)
    return torch.where(total > 0, out, torch.full_like(out, math.nan))


def motion_axis_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-axis sums `(3,)` of |pred - target| and of |target| over the entries `mask` selects (motion `(..., 3)`,
    mask broadcastable to `(...)`).

    Their ratio is the relative reconstruction error of each motion axis (x, y, depth): 0 when kept, 1 when
    decoded as no motion. Sums, so that clips can be pooled before dividing.
    """
    _check_same("pred", pred, "target", target)
    if target.shape[-1] != 3:
        raise InputError(f"motion must end in 3 axes, got {tuple(target.shape)}")
    keep = mask.bool().expand(target.shape[:-1])
    return (pred.float() - target.float()).abs()[keep].sum(0), target.float().abs()[keep].sum(0)


def relative_error(err: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """`err / ref` elementwise (e.g. `motion_axis_l1`'s sums), NaN where the reference is below `eps` (an axis
    that does not move has no relative error)."""
    return torch.where(ref > eps, err / ref.clamp_min(eps), torch.full_like(ref, math.nan))


def _check_same(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise InputError(f"`{name_a}` and `{name_b}` must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


def track_epe(pred: torch.Tensor, gt: torch.Tensor, visibility: torch.Tensor | None = None,
              valid: torch.Tensor | None = None, *, skip_first: bool = False) -> torch.Tensor:
    """Mean 3D end-point error of tracks over frames and points.

    Args:
        pred, gt: `(..., T, N, 3)` points (metric units: the error is in those units).
        visibility: `(..., T, N)` bool, ground-truth visibility; hidden points do not count.
        valid: `(..., N)` bool, points with a valid frame-0 depth.
        skip_first: leave out frame 0 (where only the depth error shows).
    Returns:
        `(...)` mean ||pred - gt|| over the counted (t, n).
    """
    _check_same("pred", pred, "gt", gt)
    if pred.ndim < 3 or pred.shape[-1] != 3:
        raise InputError(f"tracks must have shape (..., T, N, 3), got {tuple(pred.shape)}")
    err = (pred.float() - gt.float()).norm(dim=-1)  # (..., T, N)
    mask = torch.isfinite(err)
    if visibility is not None:
        _check_same("visibility", visibility, "tracks[..., 0]", err)
        mask = mask & visibility.bool()
    if valid is not None:
        if valid.shape != err.shape[:-2] + err.shape[-1:]:
            raise InputError(f"`valid` must have shape (..., N) = {tuple(err.shape[:-2] + err.shape[-1:])}, "
                             f"got {tuple(valid.shape)}")
        mask = mask & valid.bool().unsqueeze(-2)
    if skip_first:
        err, mask = err[..., 1:, :], mask[..., 1:, :]
    return _masked_mean(torch.nan_to_num(err), mask, (-2, -1))


def displacement_epe(pred: torch.Tensor, gt: torch.Tensor, visibility: torch.Tensor | None = None,
                     valid: torch.Tensor | None = None) -> torch.Tensor:
    """`track_epe` of the displacements from frame 0 (`pred - pred[0]` vs `gt - gt[0]`): motion without geometry."""
    return track_epe(pred - pred[..., :1, :, :], gt - gt[..., :1, :, :], visibility, valid)


def _depth_mask(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None, eps: float) -> torch.Tensor:
    _check_same("pred", pred, "gt", gt)
    valid = torch.isfinite(gt) & (gt > eps) & torch.isfinite(pred)
    if mask is not None:
        _check_same("mask", mask, "gt", gt)
        valid = valid & mask.bool()
    return valid


def depth_abs_rel(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None,
                  eps: float = 1e-4) -> torch.Tensor:
    """Absolute relative depth error mean(|pred - gt| / gt) over valid pixels. `(..., H, W)` -> `(...)`."""
    valid = _depth_mask(pred, gt, mask, eps)
    rel = (pred.float() - gt.float()).abs() / gt.float().clamp_min(eps)
    return _masked_mean(torch.nan_to_num(rel), valid, (-2, -1))


def depth_delta1(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-4,
                 threshold: float = 1.25) -> torch.Tensor:
    """Fraction of valid pixels with max(pred/gt, gt/pred) < 1.25. `(..., H, W)` -> `(...)`."""
    valid = _depth_mask(pred, gt, mask, eps)
    p, g = pred.float().clamp_min(eps), gt.float().clamp_min(eps)
    ratio = torch.maximum(p / g, g / p)
    return _masked_mean(torch.nan_to_num(ratio, nan=math.inf) < threshold, valid, (-2, -1))


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
         max_val: float = 1.0) -> torch.Tensor:
    """PSNR in dB of images `(..., H, W, 3)` in [0, max_val]; with `mask (..., H, W)` only those pixels count."""
    _check_same("pred", pred, "target", target)
    if pred.ndim < 3 or pred.shape[-1] != 3:
        raise InputError(f"images must have shape (..., H, W, 3), got {tuple(pred.shape)}")
    se = (pred.float() - target.float()).pow(2).mean(dim=-1)  # (..., H, W)
    if mask is None:
        mask = torch.ones_like(se, dtype=torch.bool)
    _check_same("mask", mask, "images[..., 0]", se)
    mse = _masked_mean(se, mask, (-2, -1))
    return 10.0 * torch.log10(max_val**2 / mse.clamp_min(1e-12))


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *, max_val: float = 1.0,
         window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """SSIM (Wang et al. 2004, Gaussian 11x11, sigma 1.5, per channel then averaged) of `(..., H, W, 3)`.

    With `mask (..., H, W)` the SSIM map is averaged over the masked pixels only (windows still see neighbours).
    """
    _check_same("pred", pred, "target", target)
    if pred.ndim < 3 or pred.shape[-1] != 3:
        raise InputError(f"images must have shape (..., H, W, 3), got {tuple(pred.shape)}")
    lead, (H, W) = pred.shape[:-3], pred.shape[-3:-1]
    x = pred.float().reshape(-1, H, W, 3).permute(0, 3, 1, 2)
    y = target.float().reshape(-1, H, W, 3).permute(0, 3, 1, 2)
    g = _gaussian_window(window_size, sigma, x.device)
    kernel = (g[:, None] * g[None, :]).expand(3, 1, window_size, window_size).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.pad(t, [window_size // 2] * 4, mode="reflect")
        return F.conv2d(t, kernel, groups=3)

    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    smap = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    smap = smap.mean(dim=1).reshape(*lead, H, W)
    if mask is None:
        mask = torch.ones_like(smap, dtype=torch.bool)
    _check_same("mask", mask, "images[..., 0]", smap)
    return _masked_mean(smap, mask, (-2, -1))


def nearest_fill(image: torch.Tensor, hole_mask: torch.Tensor) -> torch.Tensor:
    """Fill hole pixels with the colour of the nearest non-hole pixel (a ViSM baseline).

    Args:
        image: `(..., H, W, 3)`; hole_mask: `(..., H, W)` bool, True = hole. Images without any non-hole pixel
        are returned unchanged.
    """
    _check_same("hole_mask", hole_mask, "image[..., 0]", image[..., 0])
    import cv2
    import numpy as np

    H, W = hole_mask.shape[-2:]
    imgs = image.detach().reshape(-1, H, W, 3).cpu()
    holes = hole_mask.detach().reshape(-1, H, W).cpu().numpy().astype(np.uint8)
    out = imgs.clone()
    for i, hole in enumerate(holes):
        if hole.all() or not hole.any():
            continue
        # label of the nearest zero (non-hole) pixel for every pixel; each zero pixel has its own label
        _, labels = cv2.distanceTransformWithLabels(hole, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        source = np.zeros(labels.max() + 1, dtype=np.int64)
        keep = hole == 0
        source[labels[keep]] = np.flatnonzero(keep)
        out[i] = imgs[i].reshape(H * W, 3)[torch.from_numpy(source[labels].reshape(-1))].reshape(H, W, 3)
    return out.reshape(image.shape).to(image.device)


def classical_inpaint(image: torch.Tensor, hole_mask: torch.Tensor, method: str = "telea") -> torch.Tensor:
    """OpenCV inpainting of the holes (a ViSM baseline that needs no weights): "telea" (fast marching) or "ns"
    (Navier-Stokes), radius 3, on 8-bit frames. Shapes as in `nearest_fill`."""
    _check_same("hole_mask", hole_mask, "image[..., 0]", image[..., 0])
    import cv2
    import numpy as np

    flags = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
    if method not in flags:
        raise InputError(f"method must be one of {sorted(flags)}, got {method!r}")
    H, W = hole_mask.shape[-2:]
    imgs = (image.detach().reshape(-1, H, W, 3).float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    holes = hole_mask.detach().reshape(-1, H, W).cpu().numpy().astype(np.uint8)
    out = np.stack([cv2.inpaint(img, hole, 3, flags[method]) if hole.any() and not hole.all() else img
                    for img, hole in zip(imgs, holes)])
    return torch.from_numpy(out.astype(np.float32) / 255.0).reshape(image.shape).to(image.device)


# -- tearing and depth edges --------------------------------------------------------------------------------------

MOVING_PX = 2.0  # a track moves when it shifts more than this in the image by the last frame


def image_displacement(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Image-plane displacement `(N, 2)` in pixels of tracks `(T, N, 3)` seen by the camera K, last frame vs frame 0."""
    ends = points[[0, -1]]
    uv = (ends @ K.T)[..., :2] / ends[..., 2:3].clamp_min(1e-4)
    return uv[1] - uv[0]


def mean_image_motion(points: torch.Tensor, K: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """Mean image-plane displacement `(2,)` (pixels, last frame vs frame 0) of the `moving (N,)` tracks."""
    return image_displacement(points, K)[moving].mean(0) if moving.any() else torch.zeros(2)


def tearing(scene: Scene4D) -> torch.Tensor:
    """The hole fraction `(T,)` of each frame when the scene's points at time t are seen from the input camera.

    Rendered as 4D-ViSM renders (`render_views`, the "static" camera path: frame-0 pose, the scene's K and size),
    so the number is what the user sees. Frame 0 is the input (holes only where the depth is invalid); motion
    that keeps neighbouring pixels of a surface together opens holes only where it uncovers what the input hid.
    """
    from more4d.pipelines.vism import resolve_camera
    from more4d.pipelines.vism_conditioning import render_views

    _, hole = render_views(scene, [resolve_camera("static", scene)], scene.height, scene.width)
    return hole[0].float().mean(dim=(1, 2)).cpu()


def surface_tears(scene: Scene4D) -> torch.Tensor:
    """The fraction `(T,)` of frame-0 pixels with a depth that, at time t, have parted from a grid neighbour on their
    own surface (`more4d.render.torn_pixels`): tears alone, where `tearing` also counts what moving surfaces
    uncover. Frame 0 is 0."""
    from more4d.render import torn_pixels

    points = scene.points.float()
    torn = torn_pixels(points, points[0], scene.image_size).flatten(1)
    valid = scene.visibility[0].to(torn.device)
    return (torn & valid).float().sum(1).cpu() / valid.sum().clamp_min(1).cpu()


def depth_discontinuities(scene: Scene4D) -> torch.Tensor:
    """`(H, W)` bool: the frame-0 pixels on a depth discontinuity, the ones the renderer drops into holes once a
    view parts the two sides (`surface_radius`); their mean is the discontinuity density, which needs no ground
    truth. A magnified input camera parts every pair of grid neighbours, so it drops exactly these points."""
    from more4d.render import surface_radius

    points0 = scene.points[0].float()
    K = scene.K.float().clone()
    K[:2, :2] *= 1e3  # grid neighbours 1 px apart at the scene's K are 1000 px apart: beyond EDGE_REVEAL_PX
    _, drawn = surface_radius(points0[None], points0, scene.image_size, torch.eye(4, device=points0.device)[None],
                              K[None].to(points0.device))
    return (scene.visibility[0] & ~drawn[0]).view(scene.height, scene.width).cpu()


def fill_invalid_far(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """`depth (H, W)` with each connected region of invalid pixels given the farthest valid depth on its border:
    unknown pixels beside an occluding edge (stereo occlusions) are background, so the edge stays where the
    foreground ends."""
    import cv2

    if not valid.any():
        raise InputError("the depth map has no valid pixel (finite and > 0)")
    d = np.where(valid, depth, 0.0).astype(np.float32)
    kernel = np.ones((3, 3), np.uint8)
    while True:  # the largest border value spreads through its region (unknown pixels start at 0)
        grown = np.where(valid, d, cv2.dilate(d, kernel))
        if np.array_equal(grown, d):
            return d
        d = grown


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def depth_edges(depth: torch.Tensor | np.ndarray, valid: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
    """`(H, W)` bool Canny edges of a depth map `(H, W)` (iBims-1 settings, `EDGE_*`), on its inverse normalised to
    [0, 1]: scale- and shift-free in inverse depth, so a disparity map's reciprocal serves as ground truth. Pixels
    outside `valid` (default: finite and > 0) are filled from the far side first (`fill_invalid_far`)."""
    import cv2

    d = _numpy(depth).astype(np.float64)
    if d.ndim != 2:
        raise InputError(f"depth must have shape (H, W), got {d.shape}")
    ok = np.isfinite(d) & (d > 0)
    if valid is not None:
        ok &= _numpy(valid).astype(bool)
    inv = 1.0 / fill_invalid_far(d, ok).astype(np.float64)
    span = inv.max() - inv.min()
    if span <= 0:
        return np.zeros(d.shape, dtype=bool)
    smooth = cv2.GaussianBlur(((inv - inv.min()) / span).astype(np.float32), (0, 0), EDGE_SIGMA,
                              borderType=cv2.BORDER_REPLICATE)
    dx, dy = (np.clip(np.rint(_SOBEL_SCALE * cv2.Sobel(smooth, cv2.CV_32F, *order, ksize=3,
                                                       borderType=cv2.BORDER_REPLICATE)), -32768, 32767)
              .astype(np.int16) for order in ((1, 0), (0, 1)))
    return cv2.Canny(dx, dy, EDGE_LOW * _SOBEL_SCALE, EDGE_HIGH * _SOBEL_SCALE, L2gradient=True) > 0


def _edge_distance(edges: np.ndarray) -> np.ndarray:
    """Euclidean distance in pixels from every pixel to the nearest edge pixel, capped at `EDGE_MAX_DIST_PX`."""
    import cv2

    if not edges.any():
        return np.full(edges.shape, EDGE_MAX_DIST_PX, dtype=np.float32)
    dist = cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.minimum(dist, EDGE_MAX_DIST_PX)


def depth_edge_errors(pred_depth: torch.Tensor | np.ndarray, gt_depth: torch.Tensor | np.ndarray,
                      valid: torch.Tensor | np.ndarray | None = None) -> dict[str, float]:
    """The iBims-1 depth-boundary errors of `pred_depth` against `gt_depth` `(H, W)`, in pixels (lower is better).

    acc: the mean distance from the predicted edges within `EDGE_MAX_DIST_PX` of a ground-truth edge to the
    nearest one (spurious edges farther away are not counted; none at all scores the maximum).
    comp: the mean distance from the ground-truth edges to the nearest predicted edge, capped at `EDGE_MAX_DIST_PX`
    (iBims-1 leaves it uncapped; capped, an edge the prediction misses costs the same on any image size).
    Edges by `depth_edges`; `valid` masks the ground truth. NaN for both when the ground truth has no edge.
    """
    pred_edges, gt_edges = depth_edges(pred_depth), depth_edges(gt_depth, valid)
    if tuple(pred_edges.shape) != tuple(gt_edges.shape):
        raise InputError(f"`pred_depth` and `gt_depth` must have the same shape, got {pred_edges.shape} and "
                         f"{gt_edges.shape}")
    if not gt_edges.any():
        return {"acc": math.nan, "comp": math.nan}
    to_gt = _edge_distance(gt_edges)[pred_edges]
    near = to_gt[to_gt < EDGE_MAX_DIST_PX]
    acc = float(near.mean()) if near.size else EDGE_MAX_DIST_PX
    return {"acc": acc, "comp": float(_edge_distance(pred_edges)[gt_edges].mean())}
