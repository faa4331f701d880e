"""The page's event handlers, bound to the components of `ui.layout.Page`.

Every handler is a thin wrapper over `ui.api.More4DSession`; user mistakes (`InputError`) become a toast (server
paths cut to file names) and one line in the server log, never a traceback. Model work (generate, render) goes
through the queue with the app's concurrency limit; light events (viewer, polling, cancel) bypass it so the page
never waits behind a running job. The progress bar, the status line and renders started from the viewer reach
the page through a 1 s timer.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import gradio as gr

from more4d.errors import InputError
from ui.api import AppService, Cancelled, GenerateSettings, More4DSession, RenderSettings
from ui.layout import VIEWER_PATH, Page, model_defaults
from ui.models import MODEL_NOTES

logger = logging.getLogger(__name__)

DOWNLOAD_KINDS = ("scene", "ply", "glb", "settings", "path")


def user_errors(fn: Callable) -> Callable:
    """`InputError` -> a toast and one log line; anything else -> a toast and the traceback in the log (a bug)."""
    @functools.wraps(fn)
    def wrapper(self: Handlers, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except InputError as exc:
            message = self.service.redact(str(exc))
            logger.info("%s refused: %s", fn.__name__, message.splitlines()[0])
            title = "Cancelled" if isinstance(exc, Cancelled) else "Check your input"
            raise gr.Error(message, title=title, print_exception=False) from None
        except gr.Error:
            raise
        except Exception as exc:
            logger.exception("unexpected error in %s", fn.__name__)
            message = (f"Something went wrong ({type(exc).__name__}: {self.service.redact(str(exc))}). The server "
                       "is still running; try again or change the settings.")
            raise gr.Error(message, print_exception=False) from None
    return wrapper


class Handlers:
    """The page's handlers for one `AppService`."""

    def __init__(self, service: AppService) -> None:
        self.service = service

    def session_of(self, session: More4DSession | None, request: gr.Request) -> More4DSession:
        """The page's session (from gr.State), or a new one when absent or closed (idle timeout, eviction)."""
        if session is not None and not session.closed:
            session.last_active = time.monotonic()
            return session
        return self.service.session(request.session_hash)

    @user_errors
    def on_load(self, session: More4DSession | None, request: gr.Request) -> tuple[More4DSession, str]:
        session = self.session_of(session, request)
        url = session.open_viewer().lstrip("/")
        return session, f'<iframe src="{url}" title="3D viewer" allow="fullscreen"></iframe>'

    @user_errors
    def generate(self, session: More4DSession | None, image: Any, prompt: str, negative_prompt: str, model: str,
                 frames: Any, steps: Any, guidance: Any, seed: Any, previews: bool, request: gr.Request,
                 progress: gr.Progress = gr.Progress()) -> tuple[More4DSession, str]:  # noqa: B008
        session = self.session_of(session, request)
        path = _upload_path(image)
        if path is None:
            raise InputError("no input image: upload an image or pick an example")
        settings = GenerateSettings(model=model, num_frames=frames, num_inference_steps=steps,
                                    guidance_scale=guidance, seed=seed or 0,
                                    negative_prompt=negative_prompt or "", preview_every=3 if previews else None)
        result = session.generate(path, prompt, settings, progress=progress)
        scene = session.scene
        return session, (f"Scene ready: {scene.num_frames} frames × {scene.num_points:,} points in "
                         f"{result.seconds:.1f} s. Scrub time in the viewer, draw a camera path, then Render.")

    @user_errors
    def prepare_downloads(self, session: More4DSession | None, request: gr.Request) -> list[str]:
        session = self.session_of(session, request)
        files = []
        for kind in DOWNLOAD_KINDS:
            try:
                files.append(str(session.export(kind)))
            except InputError:
                continue  # not available yet (no path before the first render)
        return files

    @user_errors
    def render(self, session: More4DSession | None, preset: str, steps: Any, guidance: Any, seed: Any,
               render_only: bool, request: gr.Request,
               progress: gr.Progress = gr.Progress()) -> tuple[str, str, str, int, str]:  # noqa: B008
        session = self.session_of(session, request)
        settings = RenderSettings(num_inference_steps=steps, guidance_scale=guidance, seed=seed or 0,
                                  render_only=bool(render_only))
        result = session.render(None if preset == VIEWER_PATH else preset, settings, progress=progress)
        return (str(result.video), str(result.render), str(result.mask), result.version,
                f"Rendered {session.scene.num_frames} frames in {result.seconds:.1f} s.")

    def poll(self, session: More4DSession | None, shown_render: int, shown_progress: tuple[int, int],
             shown_status: str) -> tuple[Any, ...]:
        """Timer tick: the progress bars (while a job runs, and once when it ends), the status line when it
        changed, and renders started from the viewer's "Render this path" button."""
        if session is None:
            return (gr.skip(),) * 9
        jobs = (session.jobs["generate"], session.jobs["render"])
        versions = tuple(job.version for job in jobs)
        bars = [job.html() if job.state == "running" or job.version != shown else gr.skip()
                for job, shown in zip(jobs, shown_progress)]
        status = self.service.status_html()
        line = (status, status) if status != shown_status else (gr.skip(), gr.skip())
        result = session.last_render
        if result is None or result.version == shown_render:
            return (*bars, versions, *line, gr.skip(), gr.skip(), gr.skip(), gr.skip())
        return (*bars, versions, *line, str(result.video), str(result.render), str(result.mask), result.version)

    @user_errors
    def load_path(self, session: More4DSession | None, file: Any, request: gr.Request) -> tuple[str, str]:
        session = self.session_of(session, request)
        path = _upload_path(file)
        if path is None:
            return gr.skip(), gr.skip()
        camera = session.load_path(path)
        return VIEWER_PATH, f"Loaded a path with {len(camera.keyframes)} keyframes into the viewer."

    @user_errors
    def preview_preset(self, session: More4DSession | None, preset: str, request: gr.Request) -> tuple[str, str]:
        """A preset fills the viewer's keyframes; the dropdown goes back to the viewer path, which Render uses."""
        if preset == VIEWER_PATH:
            return gr.skip(), gr.skip()
        self.session_of(session, request).resolve_path(preset)
        return VIEWER_PATH, f"Preset *{preset}* loaded into the viewer's camera path: edit it there, then Render."

    def cancel(self, session: More4DSession | None) -> str:
        if session is not None:
            session.cancel()
        return "Cancelled."

    def close_session(self, request: gr.Request) -> None:
        self.service.sessions.close(request.session_hash)

    def delete_state(self, session: More4DSession | None) -> None:
        if session is not None:
            self.service.sessions.close(session.id)

    def model_changed(self, model: str) -> tuple[Any, ...]:
        """A model's own defaults and what it can do."""
        return (*model_defaults(model).values(), MODEL_NOTES[model])


def bind_events(demo: gr.Blocks, page: Page, handlers: Handlers) -> None:
    """Attach the handlers to the page's components (inside `demo`)."""
    p, h = page, handlers
    light = dict(concurrency_limit=None, api_visibility="private")
    demo.load(h.on_load, inputs=[p.session], outputs=[p.session, p.viewer], concurrency_limit=None,
              api_name="open_viewer")
    demo.unload(h.close_session)
    p.model.change(h.model_changed, inputs=[p.model],
                   outputs=[p.frames, p.steps, p.guidance, p.render_steps, p.render_guidance, p.model_note], **light)
    p.randomise.click(lambda: random.randrange(2**31), outputs=[p.seed], **light)
    # Gradio puts its progress overlay, and after an error a red "Error" badge that blocks clicks, over an event's
    # outputs; these events show it on an invisible State instead: the page's progress bar shows the jobs'
    # progress and errors are toasts.
    quiet = dict(show_progress="hidden", show_progress_on=[p.shown_status])
    gen_event = p.generate_btn.click(
        h.generate, inputs=[p.session, p.image, p.prompt, p.negative_prompt, p.model, p.frames, p.steps, p.guidance,
                            p.seed, p.previews],
        outputs=[p.session, p.status], preprocess=False, trigger_mode="once", api_name="generate",
        concurrency_id="model", **quiet,
    ).success(h.prepare_downloads, inputs=[p.session], outputs=[p.downloads], concurrency_limit=None,
              api_name="downloads")
    render_event = p.render_btn.click(
        h.render, inputs=[p.session, p.preset, p.render_steps, p.render_guidance, p.seed, p.render_only],
        outputs=[p.video, p.raw, p.mask, p.shown_render, p.status], preprocess=False, trigger_mode="once",
        api_name="render", concurrency_id="model", **quiet,
    ).success(h.prepare_downloads, inputs=[p.session], outputs=[p.downloads], **light)
    for button in (p.cancel_btn, p.render_cancel):
        button.click(h.cancel, inputs=[p.session], outputs=[p.status], cancels=[gen_event, render_event],
                     concurrency_limit=None, api_name="cancel",
                     api_visibility="public" if button is p.cancel_btn else "private")
    p.preset.input(h.preview_preset, inputs=[p.session, p.preset], outputs=[p.preset, p.status], **quiet, **light)
    p.path_file.upload(h.load_path, inputs=[p.session, p.path_file], outputs=[p.preset, p.status],
                       preprocess=False, concurrency_limit=None, api_name="load_path", **quiet)
    p.timer.tick(h.poll, inputs=[p.session, p.shown_render, p.shown_progress, p.shown_status],
                 outputs=[p.progress, p.render_progress, p.shown_progress, p.status_line, p.shown_status, p.video,
                          p.raw, p.mask, p.shown_render], **quiet, **light)


def _upload_path(payload: Any) -> str | None:
    """The server-side file of an unprocessed upload payload (a FileData dict), or None."""
    if payload is None:
        return None
    if isinstance(payload, dict):
        return payload.get("path")
    return str(payload)

