"""Python API of the app: the same actions as the page, callable from tests, notebooks and gradio_client.

`AppService` owns the hardware choice, the pipelines (one per offered model, loaded lazily or at start-up), the
per-session viser servers and the session registry; `More4DSession` is one user's workspace: input, Scene4D,
viewer, camera-path editor, outputs and job progress, all files inside the session's own temp folder. The model
work runs in `ui.gpu`'s GPU functions (in a ZeroGPU worker process where there is one).

>>> service = AppService(model="tiny", weights_dir="assets/weights/tiny")
>>> session = service.session("me")
>>> result = session.generate("cat.png", "a cat turns its head", GenerateSettings(seed=1))
>>> video = session.render("orbit").video           # preset name, CameraPath, or None = the editor's path
>>> session.export("glb")
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import secrets
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
from more4d.io import load_image
from more4d.pipelines.strag import check_num_frames, check_prompt
from more4d.scene import Scene4D
from more4d.weights.presets import PRESETS, get_preset
from ui import gpu
from ui.models import ModelState, prepare_in_background, released_cache_bytes, status_html
from ui.path_editor import PathEditor
from ui.progress import ChannelWatcher, JobProgress
from ui.sessions import SessionRegistry, ViewerSlot, ViserPool
from ui.viewer import SceneViewer

logger = logging.getLogger(__name__)

MODELS = tuple(PRESETS)
EXPORT_KINDS = ("scene", "ply", "glb", "path", "settings")


class Progress(Protocol):
    """What `gr.Progress` offers and the API needs: `progress(fraction in [0, 1], desc)`."""

    def __call__(self, fraction: float, desc: str | None = None) -> Any: ...


class Cancelled(InputError):
    """The user cancelled the running job."""


@dataclass
class GenerateSettings:
    """4D-STraG settings. `model` None is the app's default model; `None` steps / guidance are the preset's."""

    model: str | None = None
    num_frames: int = 17
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int = 0
    negative_prompt: str = ""
    preview_every: int | None = None  # show the current estimate in the viewer every N steps (one decode each)

    def check(self, models: tuple[str, ...]) -> None:
        """Check what the app decides (model, seed); the pipeline's own validators check the rest."""
        if self.model is not None and self.model not in models:
            raise InputError(f"model must be one of {models} (the models this app offers), got {self.model!r}")
        self.num_frames = check_num_frames(whole_number(self.num_frames, "frames"))
        self.seed = whole_number(self.seed, "seed")
        if not 0 <= self.seed < 2**63:
            raise InputError(f"seed must be a non-negative integer below 2**63, got {self.seed!r}")


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
        self.model: str | None = None  # the model that generated `scene`
        self.prompt = ""
        self.last_render: RenderResult | None = None
        self.last_active = time.monotonic()
        self.viewer: SceneViewer | None = None
        self.editor: PathEditor | None = None
        self.jobs = {"generate": JobProgress("generate"), "render": JobProgress("render")}
        self.progress = self.jobs["generate"]  # the running job's, else the last one's
        self._slot: ViewerSlot | None = None
        self._job = threading.Lock()
        self._viewer_lock = threading.Lock()
        self._closed = False
        self._cancel = threading.Event()
        self._channel: gpu.JobChannel | None = None
        self._on_progress: Progress | None = None
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
        channel = self._channel
        if channel is not None:
            channel.cancel()

    # ----------------------------------------------------------------------------------------- generate
    def generate(self, image: Any, prompt: str, settings: GenerateSettings | None = None,
                 progress: Progress | None = None) -> GenerateResult:
        """Image + prompt -> Scene4D (4D-STraG), shown in the viewer frame by frame, saved in the session folder.

        Args:
            image: a file path, PIL image or array `(H, W, 3)` (decoded with `more4d.io.load_image`).
            prompt: the motion description (required).
            settings: model, frames, steps, guidance, seed, negative prompt.
            progress: `progress(fraction, desc)` per stage and per denoising step (also in `self.progress`).
        """
        settings = dataclasses.replace(settings) if settings else GenerateSettings()
        with self._exclusive("generate", progress):
            start = time.perf_counter()
            self._stage("Checking the input", 0.0)
            prompt = check_prompt(prompt)
            negative_prompt = check_prompt(settings.negative_prompt, "negative_prompt", allow_empty=True)
            settings.check(self.service.models)
            model = settings.model = settings.model or self.service.default_model
            pixels = (load_image(image).numpy() * 255.0).round().astype(np.uint8)
            defaults = sampling_defaults(model)["strag"]
            steps = whole_number(_or_default(settings.num_inference_steps, defaults["num_inference_steps"]), "steps")
            guidance = real_number(_or_default(settings.guidance_scale, defaults["guidance_scale"]), "guidance")
            self.service.fits_zero_gpu(gpu.reserve_seconds(gpu.scale_of(model), "strag", steps, guidance,
                                                           settings.num_frames))
            self.open_viewer()
            viewer = self.viewer
            first: float | None = None  # seconds to the first points in the viewer
            shown_previews = 0

            def on_report(report: dict[str, Any]) -> None:
                nonlocal first, shown_previews
                self._report(report, 0.05, 0.85)
                if report["previews"] > shown_previews:
                    shown_previews = report["previews"]
                    viewer.show_scene(Scene4D.load(Path(self._channel.folder) / "preview.safetensors"),
                                      stream=False, reset_view=first is None)
                    first = first if first is not None else time.perf_counter() - start

            with self._job_folder("generate", keep=False) as folder:
                job = gpu.GenerateJob(self.service.pipeline_key(model), gpu.scale_of(model), pixels, prompt,
                                      negative_prompt, settings.num_frames, steps, guidance, settings.seed,
                                      settings.preview_every, str(folder))
                scene = self._run(gpu.generate_on_gpu, job, on_report, model)["scene"]
                scene_path = self.workdir / "scene.safetensors"
                os.replace(scene, scene_path)
                scene = Scene4D.load(scene_path)
            self.scene, self.settings, self.model, self.prompt = scene, settings, model, prompt
            self._exports = {"scene": scene_path}

            def on_frame(t: int) -> None:
                nonlocal first
                first = first if first is not None else time.perf_counter() - start
                self._stage(f"Showing the scene in the viewer: frame {t + 1}/{scene.num_frames}",
                            0.9 + 0.08 * (t + 1) / scene.num_frames)

            viewer.show_scene(scene, on_frame=on_frame, reset_view=shown_previews == 0)
            if self.editor.preset is not None:  # an unedited preset path: rescale it to the new scene
                self.editor.fill_preset(self.editor.preset)
            self._exports["settings"] = self._write_settings(pixels.shape[:2])
            seconds = time.perf_counter() - start
            short = prompt if len(prompt) <= 80 else prompt[:79] + "…"
            viewer.set_status(f"**{scene.num_frames} frames, {scene.num_points:,} points** — {short}")
            self._finish(f"{scene.num_frames} frames × {scene.num_points:,} points in {seconds:.1f} s")
            return GenerateResult(scene_path, self._exports["settings"], seconds, first)

    # ------------------------------------------------------------------------------------------- render
    def render(self, path: CameraPath | str | None = None, settings: RenderSettings | None = None,
               progress: Progress | None = None) -> RenderResult:
        """Render the scene along `path` (4D-ViSM) into three mp4s: final video, raw render, hole mask.

        Args:
            path: a `CameraPath`, a preset name (also loaded into the editor so it is previewed), or None for
                the path in the viewer's editor.
            settings: steps, guidance, seed, render_only.
            progress: `progress(fraction, desc)` per stage and per denoising step (also in `self.progress`).
        """
        settings = settings or RenderSettings()
        with self._exclusive("render", progress):
            start = time.perf_counter()
            self._stage("Checking the camera path", 0.0)
            scene = self.scene
            if scene is None:
                raise InputError("there is no scene to render yet: upload an image and press Generate first")
            camera = self.resolve_path(path)
            model = self.model or self.service.default_model
            defaults = sampling_defaults(model)["vism"]
            steps = whole_number(_or_default(settings.num_inference_steps, defaults["num_inference_steps"]), "steps")
            guidance = real_number(_or_default(settings.guidance_scale, defaults["guidance_scale"]), "guidance")
            seed = whole_number(settings.seed, "seed")
            if not settings.render_only:
                self.service.fits_zero_gpu(gpu.reserve_seconds(gpu.scale_of(model), "vism", steps, guidance,
                                                               scene.num_frames))
            with self._job_folder(f"render_{self._render_count + 1:03d}", keep=True) as folder:
                path_json = save_camera_path(camera, folder / "camera_path.json", format="more4d",
                                             image_size=scene.image_size, num_frames=scene.num_frames)
                job = gpu.RenderJob(self.service.pipeline_key(model), gpu.scale_of(model),
                                    str(self._exports["scene"]), camera.sample(scene.num_frames), self.prompt, steps,
                                    guidance, seed, bool(settings.render_only), str(folder))
                if settings.render_only:  # no model: no GPU reservation, no model lock
                    videos = self._run(gpu.render_job, job, lambda r: self._report(r, 0.05, 0.9), model, False)
                else:
                    videos = self._run(gpu.render_on_gpu, job, lambda r: self._report(r, 0.05, 0.9), model)
            self._render_count += 1
            self._exports["path"] = path_json
            result = RenderResult(Path(videos["video"]), Path(videos["render"]), Path(videos["mask"]), path_json,
                                  time.perf_counter() - start, self._render_count)
            self.last_render = result
            if self.viewer is not None:
                self.viewer.set_status(f"**Rendered** {scene.num_frames} frames in {result.seconds:.1f} s")
            self._finish(f"{scene.num_frames} frames rendered in {result.seconds:.1f} s")
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
    def _exclusive(self, what: str, progress: Progress | None) -> Iterator[None]:
        """One job per session: a second generate/render while one runs fails at once with a clear message.
        The job's progress starts here and ends as failed / cancelled when it raises."""
        if not self._job.acquire(blocking=False):
            raise InputError(f"cannot {what} now: this session is already running a job; wait for it to finish "
                             "or press Cancel")
        self._cancel.clear()
        self._on_progress = progress
        self.last_active = time.monotonic()
        self.progress = self.jobs[what]
        self.progress.start("Starting")
        try:
            yield
        except Exception as exc:
            cancelled = isinstance(exc, Cancelled)
            message = self.service.redact(str(exc)) if isinstance(exc, InputError) else "failed unexpectedly"
            self.progress.finish("cancelled" if cancelled else "failed", "cancelled" if cancelled else
                                 f"failed: {message}")
            if self.viewer is not None:
                self.viewer.set_status(f"**{what.capitalize()} {'cancelled' if cancelled else 'failed'}:** {message}")
            raise
        finally:
            self._on_progress = None
            self.last_active = time.monotonic()
            self._job.release()

    @contextlib.contextmanager
    def _job_folder(self, name: str, keep: bool) -> Iterator[Path]:
        """A fresh folder for one job in the session folder, with its progress channel. It is removed when the job
        fails (no empty or half-written output folders) and, unless `keep`, when it ends."""
        folder = self.workdir / name
        shutil.rmtree(folder, ignore_errors=True)  # a leftover of a killed job
        folder.mkdir()
        self._channel = gpu.JobChannel(folder)
        if self._cancel.is_set():
            self._channel.cancel()
        try:
            yield folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        else:
            self._channel.clear()
            if not keep:
                shutil.rmtree(folder, ignore_errors=True)
        finally:
            self._channel = None

    def _run(self, fn: Callable[[Any], gpu.JobOutput], job: Any, on_report: Callable[[dict[str, Any]], None],
             model: str, uses_model: bool = True) -> dict[str, str]:
        """Call `fn(job)` while watching its channel; with `uses_model`, once `model` can run (downloaded, loaded)
        and under its lock. Returns the job's files by role."""
        if self._cancel.is_set():
            raise Cancelled(f"{self.progress.job} cancelled")
        lock = contextlib.nullcontext()
        if uses_model:
            self._stage("Waiting for the model", 0.02)
            self.service.models_state[model].check(model)
            lock = self.service.model_lock(model)
        self.service.pipeline(model)  # created, and put where the GPU function finds it, once the model can run
        with lock:
            self._stage("Waiting for a GPU" if self.service.hardware.kind == "zerogpu" else "Starting", 0.03)
            with ChannelWatcher(self._channel, on_report):
                out = fn(job)
        if out.cancelled:
            raise Cancelled(f"{self.progress.job} cancelled")
        if out.error is not None:
            raise InputError(out.error)
        return out.files

    def _stage(self, stage: str, fraction: float) -> None:
        self.progress.set_stage(stage, fraction)
        self._publish()

    def _report(self, report: dict[str, Any], lo: float, hi: float) -> None:
        """A GPU function's report: its stage, or its denoising step mapped to [lo, hi] of the bar."""
        if report["total"]:
            fraction = lo + (hi - lo) * report["step"] / report["total"]
            self.progress.set_step(report["stage"], report["step"], report["total"], fraction)
        else:  # a stage before the denoising loop, or after it
            self.progress.set_stage(report["stage"], hi if self.progress.last_step_at > self.progress.started else lo)
        self._publish()

    def _publish(self) -> None:
        """Show the progress in the viewer and hand it to the caller's progress callback."""
        p = self.progress
        if self.viewer is not None:
            step = f" step {p.step}/{p.total}" if p.total else ""
            self.viewer.set_status(f"**{p.job.capitalize()}:** {p.stage}{step}", p.fraction)
        if self._on_progress is not None:
            self._on_progress(p.fraction, p.text())

    def _finish(self, message: str) -> None:
        self.progress.finish("done", message)
        if self._on_progress is not None:
            self._on_progress(1.0, "Done")

    def _write_settings(self, image_hw: tuple[int, int]) -> Path:
        target = self.workdir / "settings.json"
        data = {"prompt": self.prompt, "image_size": list(image_hw), **dataclasses.asdict(self.settings),
                "scene_metadata": self.scene.metadata}
        target.write_text(json.dumps(data, indent=2, default=str))
        return target

    def _render_from_viewer(self, path: CameraPath) -> None:
        """"Render this path" in the viewer: render in the background; the page picks the result up."""
        def run() -> None:
            with contextlib.suppress(InputError):  # shown in the viewer's status and the page's progress bar
                self.render(path)
        threading.Thread(target=run, name=f"more4d-render-{self.id[:8]}", daemon=True).start()


class AppService:
    """Pipelines + sessions for the app.

    Args:
        model: the default model preset (see `MODELS`); "tiny" is offered beside it when its weights are present.
        weights_dir: weights folder for `model` (default: the preset's own).
        device: torch device (default: cuda if available, else cpu).
        viser_port: first port for the per-session viser servers (bound to 127.0.0.1).
        max_sessions: concurrent viewer sessions; idle_timeout_s: close sessions idle that long.
        pipeline_factory: `fn(model) -> pipeline` replacing `MoRe4DPipeline` (tests, custom setups); the pipeline
            needs `.generate(image, prompt, **kw) -> Scene4D` and `.render(scene, camera, **kw)`.
    """

    def __init__(self, *, model: str = "tiny", weights_dir: str | Path | None = None, device: str | None = None,
                 viser_port: int = 8080, max_sessions: int = 8, idle_timeout_s: float = 1800.0,
                 workdir: str | Path | None = None, pipeline_factory: Callable[[str], Any] | None = None) -> None:
        if model not in MODELS:
            raise InputError(f"model must be one of {MODELS}, got {model!r}")
        self.default_model = model
        self.weights_dirs: dict[str, Path | None] = {model: Path(weights_dir) if weights_dir else None}
        self.hardware = gpu.detect_hardware(device)
        self.device = self.hardware.device
        self.models: tuple[str, ...] = (model,) if model == "tiny" or not _tiny_present() else (model, "tiny")
        self.models_state = {m: ModelState() for m in self.models}
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="more4d-app-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pool = ViserPool(viser_port, max_sessions)
        self.sessions = SessionRegistry(lambda sid: More4DSession(self, sid), idle_timeout_s)
        self._token = secrets.token_hex(4)
        self._pipelines: dict[str, Any] = {}
        self._factory = pipeline_factory or self._from_preset
        self._locks: dict[str, threading.Lock] = {m: threading.Lock() for m in MODELS}
        self._load_lock = threading.Lock()

    def session(self, session_id: str) -> More4DSession:
        return self.sessions.get(session_id)

    def start(self, download: bool = False, downloader: Callable[..., Any] | None = None) -> None:
        """Check the default model's weights now; for a full-scale model on a GPU also load it, in the background.

        With `download`, missing released weights (`--model moge4d`) are downloaded first, in the background: the
        page serves meanwhile and says so. Without it, missing weights raise `InputError` saying what to do.
        `downloader` replaces `more4d.weights.download.download_released` (tests).
        """
        from more4d.weights import check_weights

        model = self.default_model
        state, weights = self.models_state[model], self.weights_dirs.get(model)
        check = functools.partial(check_weights, model, weights)
        fetch = None
        try:
            check()
        except InputError as exc:
            if not get_preset(model).released or weights is not None:
                raise
            if not download:
                head, newline, files = str(exc).partition("\n")
                raise InputError(f"{head.rstrip(':')} (or start the app with --download to fetch them now)"
                                 f"{':' if newline else ''}{newline}{files}") from None
            from more4d.weights.download import download_released

            def log(line: str) -> None:
                logger.info("weights download: %s", line)
                state.log.append(line)

            fetch = functools.partial(downloader or download_released, None, log=log)
        if fetch is None and (gpu.scale_of(model) == "tiny" or self.hardware.kind == "cpu"):
            return  # loads on first use, in seconds
        state.set("loading", "loading the models into memory")
        prepare_in_background(model, state, download=fetch, check=check, load=functools.partial(self._preload, model))

    def _preload(self, model: str) -> None:
        """Load a full-scale model now. On ZeroGPU both stages must be in this process before the first GPU call
        (a worker that loads them would do so again in every fresh worker); elsewhere 4D-STraG, which runs first."""
        pipe = self.pipeline(model)
        with self.model_lock(model):
            if hasattr(pipe, "strag"):
                pipe.strag  # noqa: B018 - the property loads the stage
                if self.hardware.kind == "zerogpu":
                    pipe.vism  # noqa: B018

    def status_html(self) -> str:
        """The page's line about the hardware and each offered model's readiness."""
        downloading = any(s.state == "downloading" for s in self.models_state.values())
        return status_html(self.models_state, self.hardware.describe(),
                           released_cache_bytes() / 1e9 if downloading else None)

    def pipeline(self, model: str) -> Any:
        """The pipeline for `model`, created on first use (its models load when first needed)."""
        if model not in MODELS:
            raise InputError(f"model must be one of {MODELS}, got {model!r}")
        with self._load_lock:
            if model not in self._pipelines:
                self._pipelines[model] = self._factory(model)
                gpu.PIPELINES[self.pipeline_key(model)] = self._pipelines[model]
            return self._pipelines[model]

    def pipeline_key(self, model: str) -> str:
        """The key of `model`'s pipeline in `ui.gpu.PIPELINES`."""
        return f"{self._token}/{model}"

    def _from_preset(self, model: str) -> Any:
        from more4d.pipelines.more4d import MoRe4DPipeline
        from more4d.weights import check_weights

        weights = self.weights_dirs.get(model)
        check_weights(model, weights)
        on_cuda = self.hardware.kind != "cpu"
        memory_mode = self.hardware.memory_mode if on_cuda and gpu.scale_of(model) == "full" else "full"
        return MoRe4DPipeline(model, weights, device=self.device, dtype=torch.bfloat16 if on_cuda else torch.float32,
                              memory_mode=memory_mode, keep_both=True if self.hardware.kind == "zerogpu" else None)

    def fits_zero_gpu(self, seconds: int) -> None:
        """On ZeroGPU, refuse a job whose reservation would exceed what one call may hold (before any GPU time)."""
        if self.hardware.kind == "zerogpu" and seconds > gpu.ZEROGPU_MAX_S:
            raise InputError(f"this job needs about {seconds} s of GPU, more than the {gpu.ZEROGPU_MAX_S} s one "
                             "ZeroGPU call may hold: lower the steps or the frames")

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

    def redact(self, text: str) -> str:
        """`text` with server paths (this app's folder, the temp folder) cut to their file names: error messages
        name the user's file, not where the server keeps it."""
        for root in (str(self.workdir), tempfile.gettempdir()):
            text = re.sub(re.escape(root) + r"[^\s'\"]*", lambda m: Path(m.group()).name, text)
        return text

    def close(self) -> None:
        self.sessions.close_all()
        for model in self._pipelines:
            gpu.PIPELINES.pop(self.pipeline_key(model), None)
        shutil.rmtree(self.workdir, ignore_errors=True)


def sampling_defaults(model: str) -> dict[str, dict[str, Any]]:
    """{"strag": ..., "vism": ...}: the settings each stage's pipeline uses for `model` when given none."""
    from more4d.pipelines import strag, vism

    return {"strag": strag.preset_defaults(model), "vism": vism.preset_defaults(model)}


def _tiny_present() -> bool:
    from more4d.weights import check_weights

    try:
        check_weights("tiny")
    except InputError:
        return False
    return True


def whole_number(value: Any, name: str) -> int:
    """A whole number from the page (sliders send floats) or the API; text and fractions raise `InputError`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number, got {value!r}") from None
    if isinstance(value, bool) or not number.is_integer():
        raise InputError(f"{name} must be a whole number, got {value!r}")
    return int(number)


def real_number(value: Any, name: str) -> float:
    """A number from the page or the API; text raises `InputError`."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None


def _or_default(value: Any, default: Any) -> Any:
    return default if value is None or value == "" else value
