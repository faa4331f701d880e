"""more4d.eval.metrics: known values, masks, batch axes, empty selections and bad input."""

import math

import numpy as np
import pytest
import skimage.data
import skimage.filters
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from more4d.errors import InputError
from more4d.eval.metrics import (
    classical_inpaint,
    depth_abs_rel,
    depth_delta1,
    displacement_epe,
    nearest_fill,
    psnr,
    ssim,
    track_epe,
)
from more4d.geometry import backproject_depth
from more4d.scene import Scene4D


def test_track_epe_known_value_and_masks():
    gt = torch.zeros(2, 5, 7, 3)
    pred = gt.clone()
    pred[..., 0] = 3.0
    pred[..., 1] = 4.0  # error 5 everywhere
    assert torch.allclose(track_epe(pred, gt), torch.full((2,), 5.0))
    vis = torch.ones(2, 5, 7, dtype=torch.bool)
    pred[0, :, 0] = 100.0  # hidden point: must not count
    vis[0, :, 0] = False
    assert torch.allclose(track_epe(pred, gt, vis), torch.full((2,), 5.0))
    valid = torch.ones(2, 7, dtype=torch.bool)
    valid[1] = False
    out = track_epe(pred, gt, vis, valid)
    assert out[0] == 5.0 and math.isnan(out[1])  # nothing counted -> NaN, not 0


def test_track_epe_skip_first_and_nonfinite():
    gt = torch.zeros(3, 4, 3)
    pred = torch.ones(3, 4, 3)
    pred[1:] = 0.0
    assert track_epe(pred, gt, skip_first=True) == 0.0
    pred[2, 0] = math.nan
    assert torch.isfinite(track_epe(pred, gt))


def test_displacement_epe_ignores_frame0_geometry():
    gt = torch.zeros(3, 2, 3)  # (T, N, 3): track 0 moves 3 then 5 along x, track 1 stays
    gt[1, 0, 0], gt[2, 0, 0] = 3.0, 5.0
    gt = gt + torch.tensor([0.5, -1.0, 4.0])
    vis = torch.ones(3, 2, dtype=torch.bool)
    vis[2, 1] = False
    frozen = gt[:1].expand_as(gt)  # zero motion: mean displacement magnitude over the 5 visible (t, n)
    assert torch.allclose(displacement_epe(frozen, gt, vis), torch.tensor(8.0 / 5))
    offset = gt + torch.tensor([0.0, 0.0, 2.0])  # wrong frame-0 depth, exact motion
    assert displacement_epe(offset, gt, vis) == 0.0 and track_epe(offset, gt, vis) == 2.0


def test_motion_axis_l1_finds_a_lost_axis():
    from more4d.eval.metrics import motion_axis_l1

    target = torch.zeros(2, 4, 3)
    target[:, :2] = torch.tensor([0.5, -0.2, 0.1])  # tracks 0 and 1 move
    pred = target.clone()
    pred[..., 0] = 0  # x decoded as no motion
    err, ref = motion_axis_l1(pred, target, torch.tensor([True, True, False, False]))
    torch.testing.assert_close(err / ref, torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(ref, torch.tensor([2.0, 0.8, 0.4]))  # 2 frames x 2 tracks
    with pytest.raises(InputError, match="3 axes"):
        motion_axis_l1(torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2, dtype=torch.bool))


def test_depth_metrics():
    gt = torch.full((2, 8, 8), 2.0)
    pred = gt * 1.1
    assert torch.allclose(depth_abs_rel(pred, gt), torch.full((2,), 0.1), atol=1e-6)
    assert torch.allclose(depth_delta1(pred, gt), torch.ones(2))
    pred[1, :4] = 4.0  # half the pixels off by 2x
    assert depth_delta1(pred, gt)[1] == pytest.approx(0.5)
    gt[0] = 0.0  # invalid ground truth everywhere
    assert math.isnan(depth_abs_rel(pred, gt)[0])
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[1, 4:] = True
    assert depth_abs_rel(pred, gt, mask)[1] == pytest.approx(0.1)


def test_psnr_masked():
    target = torch.zeros(2, 3, 10, 12, 3)
    pred = torch.full_like(target, 0.1)  # mse 0.01 -> 20 dB
    assert torch.allclose(psnr(pred, target), torch.full((2, 3), 20.0))
    mask = torch.zeros(2, 3, 10, 12, dtype=torch.bool)
    mask[..., :5, :] = True
    pred[..., 5:, :, :] = 1.0  # only outside the mask
    assert torch.allclose(psnr(pred, target, mask), torch.full((2, 3), 20.0))
    assert (psnr(target, target) > 100).all()


def test_ssim_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 24, 24, 3, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    s = ssim(noisy, x)
    assert (s < 0.9).all() and (s > 0).all()
    mask = torch.zeros(2, 24, 24, dtype=torch.bool)
    mask[:, :12] = True
    half = x.clone()
    half[:, 18:] = 0.0
    assert ssim(half, x, mask).mean() > ssim(half, x).mean()


def test_ssim_and_psnr_match_scikit_image_on_photos():
    """scikit-image with the settings of Wang et al. (Gaussian sigma 1.5, population covariance, K1 0.01, K2 0.03)
    on its bundled photos, noisy and blurred, batched `(2, 3, H, W, 3)`. Its SSIM averages the map inside a
    5-pixel border (the two pad the image differently): ours over the same pixels, and over a random interior
    subset against the mean of its full map there."""
    photos = np.stack([getattr(skimage.data, name)()[:128, :160] for name in ("astronaut", "chelsea", "coffee")])
    photos = photos.astype(np.float64) / 255.0
    rng = np.random.default_rng(0)
    distorted = np.stack([np.clip(photos + rng.normal(0, 0.08, photos.shape), 0, 1),
                          skimage.filters.gaussian(photos, sigma=(0, 2, 2, 0))])
    interior = np.zeros((128, 160), dtype=bool)
    interior[5:-5, 5:-5] = True
    subset = interior & (rng.random((128, 160)) < 0.3)
    pred, target = torch.from_numpy(distorted), torch.from_numpy(photos).expand(2, -1, -1, -1, -1)
    ours = ssim(pred, target, torch.from_numpy(interior).expand(2, 3, -1, -1))
    ours_subset = ssim(pred, target, torch.from_numpy(subset).expand(2, 3, -1, -1))
    ours_psnr = psnr(pred, target)
    for d in range(2):
        for i in range(3):
            ref, full = structural_similarity(distorted[d, i], photos[i], data_range=1.0, channel_axis=-1,
                                              gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                              full=True)
            assert ours[d, i].item() == pytest.approx(ref, abs=1e-5)
            assert ours_subset[d, i].item() == pytest.approx(full.mean(-1)[subset].mean(), abs=1e-5)
            assert ours_psnr[d, i].item() == pytest.approx(
                peak_signal_noise_ratio(photos[i], distorted[d, i], data_range=1.0), abs=1e-4)


def test_nearest_fill():
    img = torch.zeros(2, 6, 6, 3)
    img[:, :, :3] = 1.0  # left half white, right half black
    hole = torch.zeros(2, 6, 6, dtype=torch.bool)
    hole[0, :, 2] = True  # column 2 is a hole: nearest is column 1 (white) or 3 (black) at equal distance
    hole[1, :, 4:] = True  # right columns: nearest non-hole is column 3 (black)
    out = nearest_fill(img * 0.5 + 0.25 * (~hole).unsqueeze(-1), hole)
    assert torch.equal(out[~hole], (img * 0.5 + 0.25)[~hole])
    assert torch.allclose(out[1, :, 4:], torch.full((6, 2, 3), 0.25))
    all_hole = torch.ones(1, 4, 4, dtype=torch.bool)
    assert torch.equal(nearest_fill(torch.ones(1, 4, 4, 3), all_hole), torch.ones(1, 4, 4, 3))


def test_bad_input():
    with pytest.raises(InputError, match="same shape"):
        track_epe(torch.zeros(2, 3, 3), torch.zeros(2, 4, 3))
    with pytest.raises(InputError, match=r"\(\.\.\., T, N, 3\)"):
        track_epe(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(InputError, match="mask"):
        psnr(torch.zeros(4, 4, 3), torch.zeros(4, 4, 3), torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(InputError, match="images"):
        ssim(torch.zeros(4, 4, 4), torch.zeros(4, 4, 4))


@pytest.mark.parametrize("method", ["telea", "ns"])
def test_classical_inpaint_fills_only_holes(method):
    y, x = torch.meshgrid(torch.linspace(0, 1, 24), torch.linspace(0, 1, 32), indexing="ij")
    img = torch.stack([x, y, 0.5 * torch.ones_like(x)], -1)[None]
    hole = torch.zeros(1, 24, 32, dtype=torch.bool)
    hole[0, 8:14, 10:20] = True
    out = classical_inpaint(img * (~hole).unsqueeze(-1), hole, method)
    assert (out[~hole] - img[~hole]).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit round trip only
    assert (out[hole] - img[hole]).abs().mean() < 0.1  # the dark hole is filled from its surroundings
    with pytest.raises(InputError):
        classical_inpaint(img, hole, "biharmonic")


# -- tearing and depth edges --------------------------------------------------------------------------------------

def _scene(depth: torch.Tensor, motion: torch.Tensor | None = None) -> Scene4D:
    """The pixels of a depth map `(H, W)` as a Scene4D; `motion (T, H*W, 3)` added to frame 0 (default: 5 still
    frames)."""
    H, W = depth.shape
    K = torch.tensor([[40.0, 0, W / 2], [0, 40.0, H / 2], [0, 0, 1]])
    points0 = backproject_depth(depth, K)
    motion = torch.zeros(5, H * W, 3) if motion is None else motion
    return Scene4D(points0 + motion, torch.rand(H * W, 3, generator=torch.Generator().manual_seed(0)),
                   torch.ones(len(motion), H * W, dtype=torch.bool), K, (H, W))


def test_tearing_still_scene_has_no_holes_and_a_torn_one_opens_a_growing_gap():
    from more4d.eval.metrics import tearing

    depth = torch.full((32, 48), 2.0)
    assert torch.equal(tearing(_scene(depth)), torch.zeros(5))
    motion = torch.zeros(5, 32, 48, 3)
    # the right half slides right, 4 px more each frame: the neighbours across the middle part further than
    # TEAR_STRETCH allows, so the renderer leaves the gap open, as wide as the shift
    shift_px = 4.0 * torch.arange(5)
    motion[:, :, 24:, 0] = (shift_px * 2.0 / 40.0).view(5, 1, 1)
    tear = tearing(_scene(depth, motion.view(5, -1, 3)))
    torch.testing.assert_close(tear, shift_px / 48)


def test_surface_tears_count_a_split_surface_but_not_a_disocclusion():
    from more4d.eval.metrics import surface_tears

    depth = torch.full((32, 48), 2.0)
    motion = torch.zeros(5, 32, 48, 3)
    motion[:, :, 24:, 0] = (0.04 * torch.arange(5)).view(5, 1, 1)  # the right half of one surface slides away
    torn = surface_tears(_scene(depth, motion.view(5, -1, 3)))
    # the seam's two columns, 0.05 m apart at frame 0, stay linked up to 3x that (frames 1, 2), then tear
    torch.testing.assert_close(torn, torch.tensor([0.0, 0.0, 0.0, 2.0, 2.0]) / 48)
    depth[:, 24:] = 4.0  # the right half is a surface behind: the same slide uncovers, it tears nothing
    assert torch.equal(surface_tears(_scene(depth, motion.view(5, -1, 3))), torch.zeros(5))


def test_depth_discontinuities_follow_the_renderer_rule():
    from more4d.eval.metrics import depth_discontinuities
    from more4d.geometry import EDGE_DEPTH_RATIO

    depth = torch.full((16, 20), 2.0)
    depth[:, 10:] = 3.0  # a 50% jump: both columns beside it
    edges = depth_discontinuities(_scene(depth))
    assert edges[:, 9:11].all() and edges.sum() == 2 * 16
    ramp = 2.0 * (1 + 0.5 * EDGE_DEPTH_RATIO) ** torch.arange(20.0)  # each step below the renderer's threshold
    assert not depth_discontinuities(_scene(ramp.expand(16, 20).contiguous())).any()


def test_fill_invalid_far_takes_the_far_side():
    from more4d.eval.metrics import fill_invalid_far

    depth = np.array([[1.0, 1.0, np.inf, np.inf, 5.0, 5.0]] * 3)
    np.testing.assert_array_equal(fill_invalid_far(depth, np.isfinite(depth)), [[1, 1, 5, 5, 5, 5]] * 3)
    with pytest.raises(InputError, match="no valid pixel"):
        fill_invalid_far(depth, np.zeros(depth.shape, dtype=bool))


@pytest.mark.parametrize("shift", [0, 1, 3, 7])
def test_depth_edge_errors_of_a_shifted_step(shift):
    from more4d.eval.metrics import depth_edge_errors

    gt = np.ones((40, 64))
    gt[:, 30:] = 2.0
    pred = np.full((40, 64), 3.0)  # scale-free: another depth scale and step height
    pred[:, 30 + shift:] = 5.0
    assert depth_edge_errors(pred, gt) == {"acc": shift, "comp": shift}


def test_depth_edge_errors_limits():
    from more4d.eval.metrics import EDGE_MAX_DIST_PX, depth_edge_errors

    gt = np.ones((40, 64))
    gt[:, 20:] = 2.0
    far = np.ones((40, 64))
    far[:, 20 + 2 * int(EDGE_MAX_DIST_PX):] = 2.0  # no predicted edge near the true one: both at the cap
    assert depth_edge_errors(far, gt) == {"acc": EDGE_MAX_DIST_PX, "comp": EDGE_MAX_DIST_PX}
    flat = depth_edge_errors(gt, np.ones((40, 64)))  # no true edge: nothing to measure
    assert math.isnan(flat["acc"]) and math.isnan(flat["comp"])
    invalid = gt.copy()
    invalid[:, 18:23] = 0.0  # unknown pixels at the edge are filled from the far side: the edge stays at the near side
    errors = depth_edge_errors(gt, invalid)
    assert errors["acc"] <= 2 and errors["comp"] <= 2
    with pytest.raises(InputError, match="same shape"):
        depth_edge_errors(gt, gt[:, :32])


def test_depth_edges_match_scikit_image_canny():
    """iBims-1 computes edges with scikit-image's Canny; ours (OpenCV, same settings) agree within a pixel."""
    from scipy import ndimage
    from skimage.feature import canny

    from more4d.eval.metrics import EDGE_HIGH, EDGE_LOW, EDGE_SIGMA, depth_edges

    y, x = np.mgrid[:96, :128]
    depth = 4.0 - 0.01 * y  # a receding floor, a disc, a box and a slanted board in front
    depth = np.where((x - 40) ** 2 + (y - 40) ** 2 < 18**2, 2.0, depth)
    depth = np.where((x > 70) & (x < 110) & (y > 50) & (y < 85), 3.0, depth)
    depth = np.where((x > 80) & (x < 120) & (y > 10) & (y < 35), 1.5 + 0.02 * x, depth)
    inv = 1.0 / depth
    ours = depth_edges(depth)
    ref = canny((inv - inv.min()) / (inv.max() - inv.min()), sigma=EDGE_SIGMA, low_threshold=EDGE_LOW,
                high_threshold=EDGE_HIGH)
    assert ours.sum() > 100
    assert (ndimage.distance_transform_edt(~ref)[ours] <= 1).mean() > 0.95
    assert (ndimage.distance_transform_edt(~ours)[ref] <= 1).mean() > 0.95
