"""The viser scene of one session: a 4D point cloud with playback, display controls and the input camera.

World frame = the input camera's OpenCV frame (x right, y down, z forward), so the scene's up is -y. Each
frame of the scene is its own point-cloud node; switching frames only toggles visibility, so scrubbing and
playback send a few bytes, not the points. Frames are sent one by one as soon as they are ready
(`show_scene(..., stream=True)`), frame 0 first.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import viser
import viser.transforms as vtf

if TYPE_CHECKING:
    from more4d.scene import Scene4D

DEFAULT_MAX_POINTS = 100_000
MAX_POINTS_CHOICES = ("10000", "30000", "100000", "300000", "all")


def c2w_to_wxyz_position(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split an `opencv_c2w` `(4, 4)` into viser's `(wxyz (4,), position (3,))`."""
    c2w = np.asarray(c2w, dtype=np.float64)
    return vtf.SO3.from_matrix(c2w[:3, :3]).wxyz, c2w[:3, 3].copy()


def wxyz_position_to_c2w(wxyz: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Inverse of `c2w_to_wxyz_position`: `(4, 4)` float64 `opencv_c2w`."""
    c2w = np.eye(4)
    c2w[:3, :3] = vtf.SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix()
    c2w[:3, 3] = position
    return c2w


class SceneViewer:
    """Shows a `Scene4D` in a `viser.ViserServer` with a time slider, play/pause/loop/fps and display controls.

    Args:
        server: the session's viser server (this class owns its scene root `/scene` and the GUI it adds).

    >>> viewer = SceneViewer(viser.ViserServer(port=8080))
    >>> viewer.show_scene(scene)          # Scene4D; frames appear one by one
    >>> viewer.set_frame(5)
    """

    def __init__(self, server: viser.ViserServer) -> None:
        self.server = server
        self.scene: Scene4D | None = None
        self.scale = 1.0  # scene depth (median frame-0 depth), sets grid, frustum and point sizes
        self._frames: list[viser.PointCloudHandle | None] = []
        self._current = 0
        self._point_ids: np.ndarray | None = None  # subsampled point indices, None = all
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self.frame_listeners: list[Callable[[int], None]] = []

        server.scene.set_up_direction("-y")
        server.gui.configure_theme(control_layout="fixed", control_width="medium", show_logo=False, dark_mode=False)
        self._status = server.gui.add_markdown("**No scene yet.** Upload an image and press *Generate*.")
        self._progress = server.gui.add_progress_bar(0.0, visible=False)
        with server.gui.add_folder("Playback"):
            self.gui_frame = server.gui.add_slider("Frame", min=0, max=1, step=1, initial_value=0, disabled=True)
            self.gui_playing = server.gui.add_checkbox("Playing", initial_value=False, disabled=True)
            self.gui_loop = server.gui.add_checkbox("Loop", initial_value=True)
            self.gui_fps = server.gui.add_slider("FPS", min=1, max=30, step=1, initial_value=8)
        with server.gui.add_folder("Display", expand_by_default=False):
            self.gui_point_size = server.gui.add_slider("Point size", min=0.1, max=5.0, step=0.1, initial_value=1.0,
                                                        hint="relative to one input pixel at the scene depth")
            self.gui_max_points = server.gui.add_dropdown("Max points", MAX_POINTS_CHOICES,
                                                          initial_value=str(DEFAULT_MAX_POINTS),
                                                          hint="subsample large scenes (per frame)")
            self.gui_show_grid = server.gui.add_checkbox("Ground grid", initial_value=True)
            self.gui_show_input = server.gui.add_checkbox("Input camera", initial_value=True)
        self.gui_reset = server.gui.add_button("Reset view", hint="look at the scene from behind the input camera")

        self.gui_frame.on_update(lambda _: self.set_frame(int(self.gui_frame.value)))
        self.gui_point_size.on_update(lambda _: self._apply_point_size())
        self.gui_max_points.on_update(lambda _: self.scene is not None and self.show_scene(self.scene, stream=False))
        self.gui_show_grid.on_update(lambda _: self._set_visible("/grid", self.gui_show_grid.value))
        self.gui_show_input.on_update(lambda _: self._set_visible("/input_camera", self.gui_show_input.value))
        self.gui_reset.on_click(lambda _: self.reset_view())
        self._nodes: dict[str, viser.SceneNodeHandle] = {}
        self._player = threading.Thread(target=self._play_loop, name="more4d-viewer-playback", daemon=True)
        self._player.start()

    # ----------------------------------------------------------------------------------------- status
    def set_status(self, text: str, progress: float | None = None) -> None:
        """Show `text` (markdown) above the controls and an optional progress bar value in [0, 1]."""
        self._status.content = text
        self._progress.visible = progress is not None
        if progress is not None:
            self._progress.value = float(np.clip(progress * 100.0, 0.0, 100.0))

    # ------------------------------------------------------------------------------------------ scene
    def show_scene(self, scene: Scene4D, *, stream: bool = True, reset_view: bool = False,
                   on_frame: Callable[[int], None] | None = None) -> None:
        """Replace the shown scene by `scene`, sending frame 0 first then the others in order.

        `reset_view` moves the clients' cameras to the default view (a new scene; always for the first one).
        `on_frame(t)` is called after frame `t` was queued for the clients (streaming progress).
        """
        with self._lock:
            reset_view = reset_view or self.scene is None
            self.scene = scene
            self.gui_playing.value = False
            self._clear_frames()
            self.scale = max(float(scene.centroid_depth()), 1e-3)
            self._frames = [None] * scene.num_frames
            self._current = min(self._current, scene.num_frames - 1)
            self.gui_fps.value = int(round(scene.fps))
            self._add_context(scene)
            if reset_view:
                self.reset_view()
            self._point_ids = self._subsample_ids(scene.num_points)
            for t in range(scene.num_frames):
                self._frames[t] = self._add_frame(t)
                if stream:
                    self.server.flush()
                if on_frame is not None:
                    on_frame(t)
            self.gui_frame.max = max(scene.num_frames - 1, 1)
            self.gui_frame.disabled = scene.num_frames < 2
            self.gui_playing.disabled = scene.num_frames < 2
            self.set_frame(self._current)

    def clear(self) -> None:
        """Remove the scene (points, input camera, grid)."""
        with self._lock:
            self._clear_frames()
            for handle in self._nodes.values():
                handle.remove()
            self._nodes.clear()
            self.scene = None

    def set_frame(self, t: int) -> None:
        """Show frame `t` (clamped) and hide the others; notifies `frame_listeners`."""
        with self._lock:
            if not self._frames:
                return
            t = int(np.clip(t, 0, len(self._frames) - 1))
            with self.server.atomic():
                for i, handle in enumerate(self._frames):
                    if handle is not None:
                        handle.visible = i == t
            self._current = t
            if int(self.gui_frame.value) != t:
                self.gui_frame.value = t
        for listener in self.frame_listeners:
            listener(t)

    @property
    def frame(self) -> int:
        return self._current

    def reset_view(self) -> None:
        """Put every client's camera behind, above and right of the input camera, looking at the scene."""
        d = self.scale
        position, look_at = np.array([0.3 * d, -0.35 * d, -0.9 * d]), np.array([0.0, 0.0, d])
        cam = self.server.initial_camera
        cam.position, cam.look_at, cam.up = position, look_at, (0.0, -1.0, 0.0)
        if self.scene is not None:
            cam.fov = self._input_fov_rad(self.scene)
        for client in self.server.get_clients().values():
            client.camera.up_direction = (0.0, -1.0, 0.0)
            client.camera.position, client.camera.look_at = position, look_at
            client.camera.fov = cam.fov

    def close(self) -> None:
        self._stop.set()

    # --------------------------------------------------------------------------------------- internals
    def _subsample_ids(self, num_points: int) -> np.ndarray | None:
        choice = self.gui_max_points.value
        if choice == "all" or int(choice) >= num_points:
            return None
        return np.sort(np.random.default_rng(0).choice(num_points, int(choice), replace=False))

    def _point_size(self) -> float:
        assert self.scene is not None
        fy = float(self.scene.K[1, 1])
        shown = self.scene.num_points if self._point_ids is None else len(self._point_ids)
        return float(self.gui_point_size.value) * self.scale / fy * math.sqrt(self.scene.num_points / shown)

    def _add_frame(self, t: int) -> viser.PointCloudHandle:
        assert self.scene is not None
        points = self.scene.points[t].detach().cpu().numpy()
        colors = self.scene.colors.detach().cpu().numpy()
        keep = self.scene.visibility[t].detach().cpu().numpy()
        if self._point_ids is not None:
            points, colors, keep = points[self._point_ids], colors[self._point_ids], keep[self._point_ids]
        keep &= np.isfinite(points).all(axis=1)
        return self.server.scene.add_point_cloud(
            f"/scene/frame_{t:03d}", points[keep].astype(np.float32), (colors[keep] * 255).astype(np.uint8),
            point_size=self._point_size(), point_shape="rounded", point_shading="flat",
            visible=t == self._current)

    def _clear_frames(self) -> None:
        for handle in self._frames:
            if handle is not None:
                handle.remove()
        self._frames = []

    def _apply_point_size(self) -> None:
        with self._lock:
            if self.scene is None:
                return
            size = self._point_size()
            for handle in self._frames:
                if handle is not None:
                    handle.point_size = size

    @staticmethod
    def _input_fov_rad(scene: Scene4D) -> float:
        return 2.0 * math.atan(0.5 * scene.height / float(scene.K[1, 1]))

    def _add_context(self, scene: Scene4D) -> None:
        for handle in self._nodes.values():
            handle.remove()
        d = self.scale
        image = (scene.colors.detach().cpu().numpy().reshape(scene.height, scene.width, 3) * 255).astype(np.uint8)
        step = max(1, max(scene.height, scene.width) // 256)
        self._nodes["/input_camera"] = self.server.scene.add_camera_frustum(
            "/input_camera", fov=self._input_fov_rad(scene), aspect=scene.width / scene.height,
            scale=0.15 * d, thickness=2.0, thickness_units="screen", color=(230, 80, 40),
            image=image[::step, ::step],
            visible=self.gui_show_input.value)
        p0 = scene.points[0].detach().cpu().numpy()
        valid = scene.visibility[0].detach().cpu().numpy() & np.isfinite(p0).all(axis=1)
        floor_y = float(np.percentile(p0[valid, 1], 98)) if valid.any() else d * 0.5
        self._nodes["/grid"] = self.server.scene.add_grid(
            "/grid", width=4 * d, height=4 * d, plane="xz", cell_size=d / 10, section_size=d / 2,
            position=(0.0, floor_y, d), visible=self.gui_show_grid.value)

    def _set_visible(self, name: str, visible: bool) -> None:
        if name in self._nodes:
            self._nodes[name].visible = visible

    def _play_loop(self) -> None:
        while not self._stop.wait(1.0 / max(float(self.gui_fps.value), 1.0)):
            if not self.gui_playing.value or len(self._frames) < 2:
                continue
            nxt = self._current + 1
            if nxt >= len(self._frames):
                if not self.gui_loop.value:
                    self.gui_playing.value = False
                    continue
                nxt = 0
            self.set_frame(nxt)
