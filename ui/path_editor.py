"""Camera-path editor in viser (viser has none built in; nerfstudio's render panel is the model).

Keyframes are `more4d.camera.Keyframe`s shown as clickable frustums. The preview (the curve and one small
frustum per output frame) is drawn from `camera_path().sample(num_frames)` — the same `CameraPath` object
that `on_render` receives, so what is rendered is exactly what was previewed.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import viser

from more4d.camera import PRESET_NAMES, CameraPath, Keyframe, load_camera_path, make_preset, save_camera_path
from more4d.errors import InputError
from more4d.geometry import DEFAULT_FOV_DEG
from ui.viewer import SceneViewer, c2w_to_wxyz_position, wxyz_position_to_c2w

MAX_PATH_JSON_BYTES = 1_000_000
PATH_FORMATS = ("more4d", "nerfstudio")
KEY_COLOR, SELECTED_COLOR, PREVIEW_COLOR = (40, 110, 230), (250, 150, 0), (120, 120, 120)


class PathEditor:
    """Keyframe camera-path authoring inside a `SceneViewer`'s server.

    Args:
        viewer: the session's viewer (gives the scene scale, frame count, fps and time control).
        workdir: the session folder for path files written for download.
        on_render: called with the current `CameraPath` by the "Render this path" button.
    """

    def __init__(self, viewer: SceneViewer, workdir: Path,
                 on_render: Callable[[CameraPath], None] | None = None) -> None:
        self.viewer = viewer
        self.server = viewer.server
        self.workdir = Path(workdir)
        self.on_render = on_render
        self.keyframes: list[Keyframe] = []
        self.selected: int | None = None
        self.preset: str | None = None  # the preset the keyframes came from, until they are edited
        self._lock = threading.RLock()
        self._nodes: list[viser.SceneNodeHandle] = []
        self._gizmo: viser.TransformControlsHandle | None = None
        self._stop_playing = threading.Event()
        self._build_gui()

    # ----------------------------------------------------------------------------------------- scene info
    @property
    def num_frames(self) -> int:
        return self.viewer.scene.num_frames if self.viewer.scene is not None else 17

    @property
    def fps(self) -> float:
        return self.viewer.scene.fps if self.viewer.scene is not None else 8.0

    @property
    def image_size(self) -> tuple[int, int]:
        return self.viewer.scene.image_size if self.viewer.scene is not None else (256, 256)

    @property
    def input_fov_deg(self) -> float:
        scene = self.viewer.scene
        if scene is None:
            return DEFAULT_FOV_DEG
        return math.degrees(2.0 * math.atan(0.5 * scene.height / float(scene.K[1, 1])))

    # ------------------------------------------------------------------------------------------ the path
    def camera_path(self) -> CameraPath:
        """The edited path (raises `InputError` with fewer than 2 keyframes)."""
        with self._lock:
            if len(self.keyframes) < 2:
                raise InputError(f"the camera path has {len(self.keyframes)} keyframe(s); add at least 2 "
                                 "in the viewer (Camera path > Add keyframe) or pick a preset")
            return CameraPath(self.keyframes, fps=self.fps, closed=self.gui_closed.value,
                              tension=float(self.gui_tension.value), constant_speed=self.gui_constant.value)

    def set_path(self, path: CameraPath) -> None:
        """Replace the keyframes and options by `path`'s."""
        with self._lock:
            self.keyframes = list(path.keyframes)
            self.gui_closed.value, self.gui_constant.value = path.closed, path.constant_speed
            self.gui_tension.value = path.tension
            self.selected = None
            self.preset = None
        self.refresh()

    def fill_preset(self, name: str) -> CameraPath:
        """Fill the keyframes from preset `name` scaled to the current scene; returns the path."""
        if name not in PRESET_NAMES:
            raise InputError(f"unknown camera preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
        depth = self.viewer.scale if self.viewer.scene is not None else 1.0
        path = make_preset(name, num_frames=self.num_frames, scene_depth=depth, fov_deg=self.input_fov_deg,
                           fps=self.fps)
        self.set_path(path)
        self.preset = name
        return path

    def add_keyframe(self, c2w: np.ndarray, fov_deg: float, time: float | None = None) -> Keyframe:
        """Append a keyframe (`time` defaults to a third of the clip after the last keyframe)."""
        with self._lock:
            if time is None:
                step = max((self.num_frames - 1) / self.fps / 3.0, 0.1)
                time = self.keyframes[-1].time + step if self.keyframes else 0.0
            key = Keyframe(c2w=c2w, fov_deg=fov_deg, time=time)
            self.keyframes.append(key)
            self.preset = None
            self.keyframes.sort(key=lambda k: k.time)
            self.selected = self.keyframes.index(key)
        self.refresh()
        return key

    def delete(self, index: int) -> None:
        with self._lock:
            self._check_index(index)
            del self.keyframes[index]
            self.preset = None
            self.selected = min(index, len(self.keyframes) - 1) if self.keyframes else None
        self.refresh()

    def move(self, index: int, offset: int) -> None:
        """Reorder: swap keyframe `index`'s pose and FOV with its neighbour `index + offset` (times stay)."""
        with self._lock:
            self._check_index(index)
            other = index + offset
            if not 0 <= other < len(self.keyframes):
                return
            a, b = self.keyframes[index], self.keyframes[other]
            self.keyframes[index] = dataclasses.replace(b, time=a.time)
            self.preset = None
            self.keyframes[other] = dataclasses.replace(a, time=b.time)
            self.selected = other
        self.refresh()

    def update(self, index: int, *, c2w: np.ndarray | None = None, fov_deg: float | None = None,
               time: float | None = None) -> None:
        """Change one keyframe's pose, FOV or time (the list stays sorted by time)."""
        with self._lock:
            self._check_index(index)
            key = self.keyframes[index]
            if time is not None and any(abs(k.time - time) < 1e-6 for i, k in enumerate(self.keyframes)
                                        if i != index):
                raise InputError(f"another keyframe already has time {time} s")
            new = dataclasses.replace(key, c2w=key.c2w if c2w is None else c2w,
                                      fov_deg=key.fov_deg if fov_deg is None else fov_deg,
                                      time=key.time if time is None else time)
            self.keyframes[index] = new
            self.preset = None
            self.keyframes.sort(key=lambda k: k.time)
            self.selected = self.keyframes.index(new)
        self.refresh(keep_gizmo=c2w is not None)

    def save(self, fmt: str = "more4d") -> Path:
        """Write the path as JSON in `fmt` ("more4d" | "nerfstudio") into the session folder."""
        if fmt not in PATH_FORMATS:
            raise InputError(f"path format must be one of {PATH_FORMATS}, got {fmt!r}")
        out = self.workdir / ("camera_path.json" if fmt == "more4d" else "camera_path_nerfstudio.json")
        save_camera_path(self.camera_path(), out, format=fmt, image_size=self.image_size,
                         num_frames=self.num_frames)
        return out

    def load(self, file: str | Path) -> CameraPath:
        """Load a more4d or nerfstudio path JSON into the editor."""
        file = Path(file)
        if file.stat().st_size > MAX_PATH_JSON_BYTES:
            raise InputError(f"camera path file is {file.stat().st_size:,} bytes; at most {MAX_PATH_JSON_BYTES:,}")
        path = load_camera_path(file)
        self.set_path(path)
        return path

    # ------------------------------------------------------------------------------------------- preview
    def refresh(self, keep_gizmo: bool = False) -> None:
        """Redraw keyframe frustums, the curve and per-frame preview frustums; sync the GUI."""
        with self._lock, self.server.atomic():
            for node in self._nodes:
                node.remove()
            self._nodes = []
            d = self.viewer.scale
            aspect = self.image_size[1] / self.image_size[0]
            for i, key in enumerate(self.keyframes):
                wxyz, position = c2w_to_wxyz_position(key.c2w)
                node = self.server.scene.add_camera_frustum(
                    f"/camera_path/keyframe_{i:02d}", fov=math.radians(key.fov_deg), aspect=aspect,
                    scale=0.12 * d, thickness=2.0, thickness_units="screen", wxyz=wxyz, position=position,
                    color=SELECTED_COLOR if i == self.selected else KEY_COLOR)
                node.on_click(lambda _, i=i: self.select(i))
                self._nodes.append(node)
            if len(self.keyframes) >= 2 and self.gui_show_preview.value:
                path = self.camera_path()
                dense = path.sample(max(64, 24 * len(self.keyframes))).c2w[:, :3, 3].numpy()
                self._nodes.append(self.server.scene.add_line_segments(
                    "/camera_path/curve", np.stack([dense[:-1], dense[1:]], axis=1), colors=SELECTED_COLOR,
                    thickness=2.0, thickness_units="screen"))
                traj = path.sample(self.num_frames)
                for f in range(len(traj)):
                    wxyz, position = c2w_to_wxyz_position(traj.c2w[f].double().numpy())
                    self._nodes.append(self.server.scene.add_camera_frustum(
                        f"/camera_path/preview_{f:03d}", fov=math.radians(float(traj.fov_deg[f])), aspect=aspect,
                        scale=0.04 * d, thickness=1.0, thickness_units="screen", wxyz=wxyz, position=position,
                        color=PREVIEW_COLOR))
            self._sync_gui(keep_gizmo)

    def select(self, index: int | None) -> None:
        with self._lock:
            self.selected = index if index is not None and 0 <= index < len(self.keyframes) else None
        self.refresh()

    # ------------------------------------------------------------------------------------------ playback
    def play(self, client: viser.ClientHandle | None = None) -> None:
        """Fly the viewer camera(s) along the path, one output frame per tick, scrubbing scene time too."""
        traj = self.camera_path().sample(self.num_frames)
        self._stop_playing.clear()

        def run() -> None:
            clients = [client] if client is not None else list(self.server.get_clients().values())
            for f in range(len(traj)):
                if self._stop_playing.is_set():
                    return
                wxyz, position = c2w_to_wxyz_position(traj.c2w[f].double().numpy())
                for c in clients:
                    with c.atomic():
                        c.camera.wxyz, c.camera.position = wxyz, position
                        c.camera.fov = math.radians(float(traj.fov_deg[f]))
                self.viewer.set_frame(f)
                self._stop_playing.wait(1.0 / self.fps)

        threading.Thread(target=run, name="more4d-path-playback", daemon=True).start()

    def stop(self) -> None:
        self._stop_playing.set()

    # -------------------------------------------------------------------------------------------- GUI
    def _build_gui(self) -> None:
        gui = self.server.gui
        with gui.add_folder("Camera path"):
            self.gui_summary = gui.add_markdown("No keyframes.")
            self.gui_add = gui.add_button("Add keyframe from view", icon=viser.Icon.CAMERA_PLUS)
            self.gui_preset = gui.add_dropdown("Preset", PRESET_NAMES, initial_value=PRESET_NAMES[0])
            self.gui_fill = gui.add_button("Fill keyframes from preset")
            with gui.add_folder("Selected keyframe", expand_by_default=False):
                self.gui_selected = gui.add_dropdown("Keyframe", ("none",), initial_value="none")
                self.gui_fov = gui.add_slider("FOV (deg)", min=10.0, max=120.0, step=0.5, initial_value=55.0)
                self.gui_time = gui.add_number("Time (s)", initial_value=0.0, step=0.05)
                self.gui_gizmo = gui.add_checkbox("Move with gizmo", initial_value=False)
                self.gui_order = gui.add_button_group("Order", ("Earlier", "Later", "Delete"))
                self.gui_goto = gui.add_button("View from keyframe")
            with gui.add_folder("Options", expand_by_default=False):
                self.gui_closed = gui.add_checkbox("Loop (closed path)", initial_value=False)
                self.gui_constant = gui.add_checkbox("Constant speed", initial_value=False)
                self.gui_tension = gui.add_slider("Tension", min=-1.0, max=1.0, step=0.05, initial_value=0.0)
                self.gui_show_preview = gui.add_checkbox("Show path preview", initial_value=True)
            self.gui_play = gui.add_button_group("Preview", ("Play path", "Stop"))
            with gui.add_folder("Save / load", expand_by_default=False):
                self.gui_format = gui.add_dropdown("Format", PATH_FORMATS, initial_value="more4d")
                self.gui_save = gui.add_button("Download path JSON", icon=viser.Icon.DOWNLOAD)
                self.gui_load = gui.add_upload_button("Load path JSON", icon=viser.Icon.UPLOAD, mime_type=".json")
            self.gui_render = gui.add_button("Render this path", color="green", icon=viser.Icon.MOVIE)

        self._syncing = False
        self.gui_add.on_click(self._guarded(self._on_add))
        self.gui_fill.on_click(self._guarded(lambda _: self.fill_preset(self.gui_preset.value)))
        self.gui_selected.on_update(self._guarded(self._on_select))
        self.gui_fov.on_update(self._guarded(lambda _: self._edit_selected(fov_deg=float(self.gui_fov.value))))
        self.gui_time.on_update(self._guarded(lambda _: self._edit_selected(time=float(self.gui_time.value))))
        self.gui_gizmo.on_update(self._guarded(lambda _: self.refresh()))
        self.gui_order.on_click(self._guarded(self._on_order))
        self.gui_goto.on_click(self._guarded(self._on_goto))
        for handle in (self.gui_closed, self.gui_constant, self.gui_tension, self.gui_show_preview):
            handle.on_update(self._guarded(lambda _: self.refresh()))
        self.gui_play.on_click(self._guarded(
            lambda ev: self.play(ev.client) if ev.target.value == "Play path" else self.stop()))
        self.gui_save.on_click(self._guarded(self._on_save))
        self.gui_load.on_upload(self._guarded(self._on_load))
        self.gui_render.on_click(self._guarded(self._on_render))

    def _guarded(self, fn: Callable[[viser.GuiEvent], None]) -> Callable[[viser.GuiEvent], None]:
        """Run a GUI callback; user mistakes become a notification for the clicking client."""
        def wrapper(event: viser.GuiEvent) -> None:
            if self._syncing:
                return
            try:
                fn(event)
            except InputError as exc:
                if event.client is not None:
                    event.client.add_notification("Camera path", str(exc), color="red", auto_close_seconds=6.0)
        return wrapper

    def _sync_gui(self, keep_gizmo: bool) -> None:
        self._syncing = True
        try:
            labels = tuple(f"{i + 1} @ {k.time:.2f} s" for i, k in enumerate(self.keyframes)) or ("none",)
            self.gui_selected.options = labels
            self.gui_selected.value = labels[self.selected] if self.selected is not None else labels[0]
            has_sel = self.selected is not None
            for handle in (self.gui_fov, self.gui_time, self.gui_gizmo, self.gui_goto):
                handle.disabled = not has_sel
            if has_sel:
                key = self.keyframes[self.selected]
                self.gui_fov.value, self.gui_time.value = key.fov_deg, round(key.time, 3)
            n = len(self.keyframes)
            self.gui_summary.content = (
                f"**{n} keyframe{'s' * (n != 1)}**" + (
                    f", {self.keyframes[-1].time - self.keyframes[0].time:.2f} s, rendered as "
                    f"{self.num_frames} frames" if n >= 2 else " (add at least 2 to render)"))
            self.gui_render.disabled = n < 2
        finally:
            self._syncing = False
        if keep_gizmo:
            return
        if self._gizmo is not None:
            self._gizmo.remove()
            self._gizmo = None
        if has_sel and self.gui_gizmo.value:
            wxyz, position = c2w_to_wxyz_position(self.keyframes[self.selected].c2w)
            self._gizmo = self.server.scene.add_transform_controls(
                "/camera_path/gizmo", scale=0.25 * self.viewer.scale, wxyz=wxyz, position=position)
            self._gizmo.on_update(lambda _: self.selected is not None and self.update(
                self.selected, c2w=wxyz_position_to_c2w(self._gizmo.wxyz, self._gizmo.position)))

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self.keyframes):
            raise InputError(f"keyframe index {index} out of range (have {len(self.keyframes)})")

    def _on_add(self, event: viser.GuiEvent) -> None:
        cam = event.client.camera
        self.add_keyframe(wxyz_position_to_c2w(cam.wxyz, cam.position), math.degrees(cam.fov))

    def _on_select(self, _: viser.GuiEvent) -> None:
        labels = list(self.gui_selected.options)
        self.select(labels.index(self.gui_selected.value) if self.keyframes else None)

    def _edit_selected(self, **changes: float) -> None:
        if self.selected is not None:
            self.update(self.selected, **changes)

    def _on_order(self, event: viser.GuiEvent) -> None:
        if self.selected is None:
            return
        action = event.target.value
        if action == "Delete":
            self.delete(self.selected)
        else:
            self.move(self.selected, -1 if action == "Earlier" else 1)

    def _on_goto(self, event: viser.GuiEvent) -> None:
        if self.selected is not None:
            key = self.keyframes[self.selected]
            wxyz, position = c2w_to_wxyz_position(key.c2w)
            with event.client.atomic():
                event.client.camera.wxyz, event.client.camera.position = wxyz, position
                event.client.camera.fov = math.radians(key.fov_deg)

    def _on_save(self, event: viser.GuiEvent) -> None:
        out = self.save(self.gui_format.value)
        event.client.send_file_download(out.name, out.read_bytes())

    def _on_load(self, event: viser.GuiEvent) -> None:
        upload = self.gui_load.value
        if len(upload.content) > MAX_PATH_JSON_BYTES:
            raise InputError(f"camera path file is {len(upload.content):,} bytes; at most {MAX_PATH_JSON_BYTES:,}")
        target = self.workdir / "uploaded_camera_path.json"
        target.write_bytes(upload.content)
        self.load(target)
        event.client.add_notification("Camera path", f"Loaded {upload.name}", auto_close_seconds=3.0)

    def _on_render(self, _: viser.GuiEvent) -> None:
        if self.on_render is not None:
            self.on_render(self.camera_path())
