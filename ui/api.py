"""Python API of the app: the same actions as the page, callable from tests, notebooks and gradio_client.

`AppService` owns the pipelines (one per model preset, loaded lazily), the per-session viser servers and the
session registry; `More4DSession` is one user's workspace: input, Scene4D, viewer, camera-path editor and
outputs, all files inside the session's own temp folder.

>>> service = AppService(model="tiny", weights_dir="assets/weights/tiny")
>>> session = service.session("me")
>>> result = session.generate("cat.png", "a cat turns its head", GenerateSettings(seed=1))
>>> video = session.render("orbit").video           # preset name, CameraPath, or None = the editor's path
>>> session.export("glb")
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from more4d.camera import CameraPath, save_camera_path
from more4d.errors import InputError
from more4d.io import load_image, write_video
from more4d.weights.presets import PRESETS
from ui.path_editor import PathEditor
from ui.sessions import SessionRegistry, ViewerSlot, ViserPool
from ui.viewer import SceneViewer

MODELS = tuple(PRESETS)
EXPORT_KINDS = ("scene", "ply", "glb", "path", "settings")
MAX_PROMPT_CHARS = 2000


class Progress(Protocol):
    """What `gr.Progress` offers and the API needs: `progress(fraction in [0, 1], desc)`."""

    def __call__(self, fraction: float, desc: str | None = None) -> Any: ...


class Cancelled(InputError):
    """The user cancelled the running job."""


@dataclass
class GenerateSettings:
    """4D-STraG settings. `None` steps / guidance use the model preset's defaults."""

    model: str = "tiny"
    num_frames: int = 17
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int = 0
    negative_prompt: str = ""
    preview_every: int | None = None  # show the current estimate in the viewer every N steps (one decode each)

    def check(self) -> None:
        if self.model not in MODELS:
            raise InputError(f"model must be one of {MODELS}, got {self.model!r}")
        n = self.num_frames
        if isinstance(n, bool) or not isinstance(n, int) or n < 5 or n > 129 or (n - 1) % 4:
            raise InputError(f"frames must be 4k+1 between 5 and 129 (e.g. 17, 49, 81), got {n!r}")
        steps = self.num_inference_steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 200):
            raise InputError(f"steps must be an integer in [1, 200], got {steps!r}")
        g = self.guidance_scale
        if g is not None and not (math.isfinite(g) and 0.0 <= g <= 30.0):
            raise InputError(f"guidance must be in [0, 30], got {g!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise InputError(f"seed must be a non-negative integer, got {self.seed!r}")
        p = self.preview_every
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or p < 1):
            raise InputError(f"preview_every must be a positive integer or None, got {p!r}")


@dataclass
class RenderSettings:
    """4D-ViSM settings; `render_only` returns the point render without the inpainting model."""

    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int = 0
    render_only: bool = False


@dataclass
class GenerateResult:
    scene_path: Path
    settings_path: Path
    seconds: float
    first_points_seconds: float  # from the call to the first points in the viewer (a denoising preview or frame 0)


@dataclass
class RenderResult:
    video: Path        # ViSM output (the point render when render_only)
    render: Path       # raw point render
    mask: Path         # hole mask video (white = hole)
    path_json: Path    # the exact camera path that was rendered (more4d JSON)
    seconds: float
    version: int = 0   # increments with each render of the session


class More4DSession:
    """One user's workspace; every file it writes lives under `workdir`."""

    def __init__(self, service: AppService, session_id: str) -> None:
        self.service = service
        self.id = session_id
        self.workdir = Path(tempfile.mkdtemp(prefix="session-", dir=service.workdir))
        self.scene = None
        self.settings: GenerateSettings | None = None
        self.prompt = ""
        self.last_render: RenderResult | None = None
        self.last_active = time.monotonic()
        self.viewer: SceneViewer | None = None
        self.editor: PathEditor | None = None
        self._slot: ViewerSlot | None = None
        self._job = threading.Lock()
        self._viewer_lock = threading.Lock()
        self._closed = False
        self._cancel = threading.Event()
        self._render_count = 0
        self._exports: dict[str, Path] = {}

    # ------------------------------------------------------------------------------------------- viewer
    def open_viewer(self) -> str:
        """Start (once) this session's viser viewer and path editor; returns its URL path on the app server."""
        with self._viewer_lock:
            if self._closed:
                raise InputError("this session has ended; reload the page")
            if self._slot is None:
                slot = self.service.acquire_viewer_slot()
                self.viewer = SceneViewer(slot.server)
                self.editor = PathEditor(self.viewer, self.workdir, on_render=self._render_from_viewer)
                self._slot = slot
                if self.scene is not None:
                    self.viewer.show_scene(self.scene)
            return self._slot.url_path

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def busy(self) -> bool:
        return self._job.locked()

    def cancel(self) -> None:
        """Ask the running generate/render to stop at its next denoising step."""
        self._cancel.set()

    # ----------------------------------------------------------------------------------------- generate
    def generate(self, image: Any, prompt: str, settings: GenerateSettings | None = None,
                 progress: Progress | None = None) -> GenerateResult:
        """Image + prompt -> Scene4D (4D-STraG), shown in the viewer frame by frame, saved in the session folder.

        Args:
            image: a file path, PIL image or array `(H, W, 3)` (decoded with `more4d.io.load_image`).
            prompt: the motion description (required).
            settings: model, frames, steps, guidance, seed, negative prompt.
            progress: `progress(fraction, desc)` per stage and per denoising step.
        """
        settings = settings or GenerateSettings()
        report = progress or _no_progress
        with self._exclusive("generate"):
            start = time.perf_counter()
            report(0.0, "Checking input")
            prompt = _check_prompt(prompt)
            settings.check()
            pixels = load_image(image)
            self.open_viewer()
            report(0.02, f"Loading the {settings.model} model")
            pipe = self.service.pipeline(settings.model)
            viewer = self.viewer
            viewer.set_status("**Generating…**", 0.0)
            kwargs = {k: v for k, v in (("num_inference_steps", settings.num_inference_steps),
                                          ("guidance_scale", settings.guidance_scale),
                                          ("preview_every", settings.preview_every)) if v is not None}
            first: float | None = None  # seconds to the first points in the viewer

            def on_step(pipe_: Any, step: int, timestep: Any, tensors: dict) -> dict:
                nonlocal first
                if self._cancel.is_set():
                    raise Cancelled("generation cancelled")
                n = _total_steps(pipe_, settings.num_inference_steps, step)
                report(0.05 + 0.8 * (step + 1) / n, f"Denoising trajectories: step {step + 1}/{n}")
                viewer.set_status(f"**Denoising** step {step + 1}/{n}", (step + 1) / n)
                if tensors.get("preview") is not None:
                    viewer.show_scene(tensors["preview"], stream=False, reset_view=first is None)
                    first = first if first is not None else time.perf_counter() - start
                return tensors

            with self.service.model_lock(settings.model):
                scene = pipe.generate(pixels, prompt, negative_prompt=settings.negative_prompt,
                                      num_frames=settings.num_frames,
                                      generator=torch.Generator().manual_seed(settings.seed),
                                      callback_on_step_end=on_step, **kwargs)
            self.scene, self.settings, self.prompt = scene, settings, prompt
            self._exports = {}

            def on_frame(t: int) -> None:
                nonlocal first
                first = first if first is not None else time.perf_counter() - start
                report(0.85 + 0.1 * (t + 1) / scene.num_frames, f"Streaming frame {t + 1}/{scene.num_frames}")

            viewer.show_scene(scene, on_frame=on_frame, reset_view=settings.preview_every is None)
            if self.editor.preset is not None:  # an unedited preset path: rescale it to the new scene
                self.editor.fill_preset(self.editor.preset)
            short = prompt if len(prompt) <= 80 else prompt[:79] + "…"
            viewer.set_status(f"**{scene.num_frames} frames, {scene.num_points:,} points** — {short}")
            report(0.97, "Saving the scene")
            scene_path = scene.save(self.workdir / "scene.safetensors")
            settings_path = self._write_settings(pixels.shape[:2])
            self._exports.update(scene=Path(scene_path), settings=settings_path)
            report(1.0, "Done")
            return GenerateResult(Path(scene_path), settings_path, time.perf_counter() - start, first)

    # ------------------------------------------------------------------------------------------- render
    def render(self, path: CameraPath | str | None = None, settings: RenderSettings | None = None,
               progress: Progress | None = None) -> RenderResult:
        """Render the scene along `path` (4D-ViSM) into three mp4s: final video, raw render, hole mask.

        Args:
            path: a `CameraPath`, a preset name (also loaded into the editor so it is previewed), or None for
                the path in the viewer's editor.
            settings: steps, guidance, seed, render_only.
        """
        settings = settings or RenderSettings()
        report = progress or _no_progress
        with self._exclusive("render"):
            start = time.perf_counter()
            scene = self.scene
            if scene is None:
                raise InputError("there is no scene to render yet: upload an image and press Generate first")
            camera = self.resolve_path(path)
            report(0.02, "Loading the model")
            pipe = self.service.pipeline(self.settings.model if self.settings else self.service.default_model)
            kwargs = {k: v for k, v in (("num_inference_steps", settings.num_inference_steps),
                                          ("guidance_scale", settings.guidance_scale)) if v is not None}

            def on_step(pipe_: Any, step: int, timestep: Any, tensors: dict) -> dict:
                if self._cancel.is_set():
                    raise Cancelled("render cancelled")
                n = _total_steps(pipe_, settings.num_inference_steps, step)
                report(0.05 + 0.85 * (step + 1) / n, f"Rendering video: step {step + 1}/{n}")
                if self.viewer is not None:
                    self.viewer.set_status(f"**Rendering** step {step + 1}/{n}", (step + 1) / n)
                return tensors

            report(0.04, "Rendering the points")
            with self.service.model_lock(self.settings.model if self.settings else self.service.default_model):
                out = pipe.render(scene, camera, prompt=self.prompt,
                                  generator=torch.Generator().manual_seed(settings.seed),
                                  render_only=settings.render_only, callback_on_step_end=on_step, **kwargs)
            report(0.92, "Writing videos")
            self._render_count += 1
            folder = self.workdir / f"render_{self._render_count:03d}"
            folder.mkdir()
            fps = float(getattr(out, "fps", scene.fps))
            videos = {name: write_video(folder / f"{name}.mp4", _first_video(getattr(out, attr)), fps=fps)
                      for name, attr in (("video", "frames"), ("render", "render"), ("mask", "mask"))}
            path_json = folder / "camera_path.json"
            save_camera_path(camera, path_json, format="more4d", image_size=scene.image_size,
                             num_frames=scene.num_frames)
            self._exports["path"] = path_json
            result = RenderResult(videos["video"], videos["render"], videos["mask"], path_json,
                                  time.perf_counter() - start, self._render_count)
            self.last_render = result
            if self.viewer is not None:
                self.viewer.set_status(f"**Rendered** {scene.num_frames} frames in {result.seconds:.1f} s")
            report(1.0, "Done")
            return result

    def resolve_path(self, path: CameraPath | str | None) -> CameraPath:
        """The `CameraPath` that `render(path)` uses; it is loaded into the editor first, so it is previewed."""
        editor = self._editor()
        if isinstance(path, CameraPath):
            editor.set_path(path)
            return editor.camera_path()
        if isinstance(path, str):
            return editor.fill_preset(path)
        if path is None:
            return editor.camera_path()
        raise InputError(f"path must be a CameraPath, a preset name or None, got {type(path).__name__}")

    def load_path(self, file: str | Path) -> CameraPath:
        """Load a more4d or nerfstudio camera-path JSON into the editor (previewed; used by the next render)."""
        return self._editor().load(file)

    # ------------------------------------------------------------------------------------------- exports
    def export(self, kind: Literal["scene", "ply", "glb", "path", "settings"]) -> Path:
        """The file for download `kind`, written on first request into the session folder."""
        if kind not in EXPORT_KINDS:
            raise InputError(f"export kind must be one of {EXPORT_KINDS}, got {kind!r}")
        if kind in self._exports:
            return self._exports[kind]
        if kind == "path":
            if len(self._editor().keyframes) < 2:
                raise InputError("there is no camera path yet: render one or add keyframes in the viewer")
            self._exports[kind] = self._editor().save("more4d")
            return self._exports[kind]
        if self.scene is None:
            raise InputError("there is nothing to export yet: press Generate first")
        from more4d.export import export_glb, export_ply_zip

        target = self.workdir / {"ply": "scene_ply.zip", "glb": "scene.glb"}[kind]
        (export_ply_zip if kind == "ply" else export_glb)(self.scene, target)
        self._exports[kind] = target
        return target

    def close(self) -> None:
        """Stop the viewer and delete the session folder."""
        self.cancel()
        with self._viewer_lock:
            self._closed = True
            if self.editor is not None:
                self.editor.stop()
            if self.viewer is not None:
                self.viewer.close()
            if self._slot is not None:
                self.service.pool.release(self._slot)
                self._slot = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ----------------------------------------------------------------------------------------- internals
    def _editor(self) -> PathEditor:
        self.open_viewer()
        assert self.editor is not None
        return self.editor

    @contextlib.contextmanager
    def _exclusive(self, what: str) -> Iterator[None]:
        """One job per session: a second generate/render while one runs fails at once with a clear message."""
        if not self._job.acquire(blocking=False):
            raise InputError(f"cannot {what} now: this session is already running a job; wait for it to finish "
                             "or press Cancel")
        self._cancel.clear()
        self.last_active = time.monotonic()
        try:
            yield
        except Exception as exc:
            if self.viewer is not None:
                self.viewer.set_status(f"**{what.capitalize()} failed:** {exc}")
            raise
        finally:
            self.last_active = time.monotonic()
            self._job.release()

    def _write_settings(self, image_hw: tuple[int, int]) -> Path:
        target = self.workdir / "settings.json"
        data = {"prompt": self.prompt, "image_size": list(image_hw), **dataclasses.asdict(self.settings),
                "scene_metadata": self.scene.metadata}
        target.write_text(json.dumps(data, indent=2, default=str))
        return target

    def _render_from_viewer(self, path: CameraPath) -> None:
        """"Render this path" in the viewer: render in the background; the page picks the result up."""
        def run() -> None:
            try:
                self.render(path)
            except InputError as exc:
                if self.viewer is not None:
                    self.viewer.set_status(f"**Render failed:** {exc}")
        threading.Thread(target=run, name=f"more4d-render-{self.id[:8]}", daemon=True).start()


class AppService:
    """Pipelines + sessions for the app.

    Args:
        model: the default model preset ("tiny" | "wan2.1-14b").
        weights_dir: weights folder for `model` (default: the preset's own).
        device: torch device (default: cuda if available, else cpu).
        viser_port: first port for the per-session viser servers (bound to 127.0.0.1).
        max_sessions: concurrent viewer sessions; idle_timeout_s: close sessions idle that long.
        pipeline_factory: `fn(model) -> pipeline` replacing `MoRe4DPipeline.from_preset` (tests, custom setups);
            the pipeline needs `.generate(image, prompt, **kw) -> Scene4D` and `.render(scene, camera, **kw)`.
    """

    def __init__(self, *, model: str = "tiny", weights_dir: str | Path | None = None, device: str | None = None,
                 viser_port: int = 8080, max_sessions: int = 8, idle_timeout_s: float = 1800.0,
                 workdir: str | Path | None = None, pipeline_factory: Callable[[str], Any] | None = None) -> None:
        if model not in MODELS:
            raise InputError(f"model must be one of {MODELS}, got {model!r}")
        self.default_model = model
        self.weights_dirs: dict[str, Path | None] = {model: Path(weights_dir) if weights_dir else None}
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="more4d-app-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pool = ViserPool(viser_port, max_sessions)
        self.sessions = SessionRegistry(lambda sid: More4DSession(self, sid), idle_timeout_s)
        self._pipelines: dict[str, Any] = {}
        self._factory = pipeline_factory or self._from_preset
        self._locks: dict[str, threading.Lock] = {m: threading.Lock() for m in MODELS}
        self._load_lock = threading.Lock()

    def session(self, session_id: str) -> More4DSession:
        return self.sessions.get(session_id)

    def pipeline(self, model: str) -> Any:
        """The `MoRe4DPipeline` for `model`, loaded on first use."""
        if model not in MODELS:
            raise InputError(f"model must be one of {MODELS}, got {model!r}")
        with self._load_lock:
            if model not in self._pipelines:
                self._pipelines[model] = self._factory(model)
            return self._pipelines[model]

    def _from_preset(self, model: str) -> Any:
        from more4d.pipelines.more4d import MoRe4DPipeline

        dtype = torch.float32 if self.device == "cpu" else torch.bfloat16
        return MoRe4DPipeline.from_preset(model, weights_dir=self.weights_dirs.get(model), device=self.device,
                                          dtype=dtype)

    def acquire_viewer_slot(self) -> ViewerSlot:
        """A viser server for a session; when all are taken, the least recently active session with no browser
        connected to its viewer (an API client, a closed tab) is closed to free one."""
        try:
            return self.pool.acquire()
        except InputError:
            if not self.sessions.evict_one(lambda s: s.viewer is not None and not s.viewer.server.get_clients()):
                raise
            return self.pool.acquire()

    def model_lock(self, model: str) -> threading.Lock:
        """Serialises calls into one pipeline (schedulers keep per-call state)."""
        return self._locks[model]

    def close(self) -> None:
        self.sessions.close_all()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty: describe the scene and its motion, e.g. 'a dog wags its tail'")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(f"the prompt is {len(prompt)} characters long; at most {MAX_PROMPT_CHARS}")
    return prompt.strip()


def _total_steps(pipe: Any, requested: int | None, step: int) -> int:
    """Steps of the running denoising loop: the requested count, else the pipeline's default."""
    return requested or getattr(pipe, "defaults", {}).get("num_inference_steps") or step + 1


def _first_video(video: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """`(B, T, H, W[, 3])` -> the first batch item; `(T, H, W[, 3])` unchanged."""
    is_batched = video.ndim == 5 or (video.ndim == 4 and video.shape[-1] != 3)
    return video[0] if is_batched else video


def _no_progress(fraction: float, desc: str | None = None) -> None:
    return None

