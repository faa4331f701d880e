"""Point splatting for more4d: `render_points` (one batch of frames) and `render_scene` (a Scene4D along a path).

The pure-PyTorch reference runs on CPU and CUDA; gsplat is used for the gaussian mode when importable on CUDA.
"""

from more4d.render.backends import gsplat_available
from more4d.render.scene import render_scene, render_video, surface_radius, torn_pixels
from more4d.render.splat import RenderOutput, render_points

__all__ = ["RenderOutput", "gsplat_available", "render_points", "render_scene", "render_video", "surface_radius",
           "torn_pixels"]
