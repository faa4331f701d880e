"""Diffusion over one surface (motion, log depth): a step inside a surface becomes a ramp, a step at a depth edge
stays."""

from __future__ import annotations

import pytest
import torch

from more4d.errors import InputError
from more4d.surface_smoothing import SURFACE_EDGE_RATIO, smooth_depth_over_surfaces, smooth_over_surfaces

H, W = 24, 40


def step_motion(column: int) -> torch.Tensor:
    """A motion video `(3, 2, H, W)` whose x motion is 1 left of `column` and 0 from it on (frame 0 still)."""
    video = torch.zeros(3, 2, H, W)
    video[0, 1, :, :column] = 1.0
    return video


def largest_neighbour_step(video: torch.Tensor) -> torch.Tensor:
    """Per column pair, the largest difference of x motion between horizontal neighbours `(W - 1,)`."""
    return (video[0, 1, :, 1:] - video[0, 1, :, :-1]).abs().amax(0)


def test_a_step_inside_one_surface_spreads_into_a_ramp():
    flat = torch.full((H, W), 2.0)
    smoothed = smooth_over_surfaces(step_motion(20), flat, 100)
    assert largest_neighbour_step(step_motion(20)).max() == 1.0
    assert largest_neighbour_step(smoothed).max() < 0.2  # no two neighbours part: the surface stretches
    torch.testing.assert_close(smoothed[0, 1].mean(), torch.tensor(0.5))  # diffusion moves motion, adds none
    assert smoothed[:, 0].abs().max() == 0 and smoothed[1:].abs().max() == 0


def test_a_step_at_a_depth_edge_stays_sharp_and_each_side_keeps_its_motion():
    depth = torch.full((H, W), 2.0)
    depth[:, 20:] = 2.0 * (1 + 1.5 * SURFACE_EDGE_RATIO)  # a surface behind: its own motion
    smoothed = smooth_over_surfaces(step_motion(20), depth, 100)
    torch.testing.assert_close(smoothed, step_motion(20))
    invalid = depth.clone()
    invalid[:, 20] = 0.0  # pixels without depth belong to no surface
    torch.testing.assert_close(smooth_over_surfaces(step_motion(20), invalid, 50)[:, :, :, :20],
                               step_motion(20)[:, :, :, :20])


def test_zero_iterations_and_bad_input():
    video = step_motion(7)
    assert smooth_over_surfaces(video, torch.ones(H, W), 0) is video
    for bad in (-1, 1.5, True, 10**6):
        with pytest.raises(InputError, match="surface_smoothing"):
            smooth_over_surfaces(video, torch.ones(H, W), bad)
    with pytest.raises(InputError, match="does not match"):
        smooth_over_surfaces(video, torch.ones(H, W + 1), 3)


def test_depth_smoothing_ramps_small_steps_keeps_large_ones_and_invalid_pixels():
    depth = torch.full((H, W), 2.0)
    depth[:, 10:] = 2.1  # a 5% step inside one surface: smoothed into a ramp
    depth[:, 30:] = 4.0  # a surface behind: its edge stays
    depth[0, 0] = 0.0  # no depth
    out = smooth_depth_over_surfaces(depth, 100)
    steps = (out[1:, 1:] / out[1:, :-1]).log().abs()
    assert steps[:, :28].max() < 0.02 and torch.equal(out[:, 30:], depth[:, 30:])
    assert out[0, 0] == 0 and smooth_depth_over_surfaces(depth, 0) is depth
