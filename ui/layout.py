"""The Gradio 6 page: input + settings, the live viser viewer, camera-path controls, render outputs, downloads.

Every handler is a thin wrapper over `ui.api.More4DSession`; user mistakes (`InputError`) become `gr.Error`.
Model work (generate, render) goes through the queue with the app's concurrency limit; light events
(viewer, polling, cancel) bypass it so the page never waits behind a running job.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from more4d.camera import PRESET_NAMES
from more4d.errors import InputError
from ui.api import MODELS, AppService, GenerateSettings, More4DSession, RenderSettings

logger = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
VIEWER_PATH = "(path in the viewer)"
DOWNLOAD_KINDS = ("scene", "ply", "glb", "settings", "path")
CSS = """
#more4d-viewer iframe { width: 100%; height: 640px; border: 1px solid var(--border-color-primary); border-radius: 8px; }
#more4d-status { min-height: 2.5em; }
"""

try:  # a Hugging Face ZeroGPU Space: model work runs under spaces.GPU
    import spaces

    gpu = spaces.GPU(duration=300)
except ImportError:
    def gpu(fn: Callable) -> Callable:
        return fn


def _friendly(fn: Callable) -> Callable:
    """Turn `InputError` into `gr.Error` (shown as a toast) and log anything unexpected."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            raise gr.Error(str(exc), title="Check your input") from exc
        except gr.Error:
            raise
        except Exception as exc:
            logger.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(exc).__name__}: {exc}). The server is still running; "
                           "try again or change the settings.") from exc
    return wrapper


def load_examples() -> list[list[str]]:
    """[[image path, prompt], ...] from assets/examples/prompts.json (empty if the folder is missing)."""
    index = EXAMPLES_DIR / "prompts.json"
    if not index.is_file():
        return []
    return [[str(EXAMPLES_DIR / item["image"]), item["prompt"]] for item in json.loads(index.read_text())]


def _upload_path(payload: Any) -> str | None:
    """The server-side file of an unprocessed upload payload (a FileData dict), or None."""
    if payload is None:
        return None
    if isinstance(payload, dict):
        return payload.get("path")
    return str(payload)


def _optional_int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _optional_float(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


def model_defaults(model: str) -> dict[str, Any]:
    """The page's initial settings for `model`: its preset's STraG and ViSM sampling defaults."""
    from more4d.weights import get_preset

    strag, vism = get_preset(model).strag_defaults, get_preset(model).vism_defaults
    return {"frames": strag["num_frames"], "steps": strag["num_inference_steps"],
            "guidance": strag["guidance_scale"], "render_steps": vism["num_inference_steps"],
            "render_guidance": vism["guidance_scale"]}


def build_demo(service: AppService) -> gr.Blocks:
    """The Blocks page bound to `service`. Launch with `app_kwargs={"routes": proxy_routes(service.pool)}`."""

    def session_of(session: More4DSession | None, request: gr.Request) -> More4DSession:
        """The page's session (from gr.State), or a new one when absent or closed (idle timeout, eviction)."""
        if session is not None and not session.closed:
            session.last_active = time.monotonic()
            return session
        return service.session(request.session_hash)

    # 1) handlers ------------------------------------------------------------------------------------
    @_friendly
    def on_load(session: More4DSession | None, request: gr.Request) -> tuple[More4DSession, str]:
        session = session_of(session, request)
        url = session.open_viewer().lstrip("/")
        return session, f'<iframe src="{url}" title="3D viewer" allow="fullscreen"></iframe>'

    @gpu
    @_friendly
    def generate(session: More4DSession | None, image: Any, prompt: str, negative_prompt: str, model: str,
                 frames: float, steps: Any, guidance: Any, seed: Any, previews: bool, request: gr.Request,
                 progress: gr.Progress = gr.Progress()) -> tuple[More4DSession, str]:  # noqa: B008
        session = session_of(session, request)
        path = _upload_path(image)
        if path is None:
            raise InputError("no input image: upload an image or pick an example")
        settings = GenerateSettings(model=model, num_frames=int(frames), num_inference_steps=_optional_int(steps),
                                    guidance_scale=_optional_float(guidance), seed=int(seed or 0),
                                    negative_prompt=negative_prompt or "", preview_every=3 if previews else None)
        result = session.generate(path, prompt, settings, progress=progress)
        scene = session.scene
        return session, (f"Scene ready: {scene.num_frames} frames × {scene.num_points:,} points in "
                         f"{result.seconds:.1f} s. Scrub time in the viewer, draw a camera path, then Render.")

    @_friendly
    def prepare_downloads(session: More4DSession | None, request: gr.Request) -> list[str]:
        session = session_of(session, request)
        files = []
        for kind in DOWNLOAD_KINDS:
            try:
                files.append(str(session.export(kind)))
            except InputError:
                continue  # not available yet (no path before the first render)
        return files

    @gpu
    @_friendly
    def render(session: More4DSession | None, preset: str, steps: Any, guidance: Any, seed: Any,
               render_only: bool, request: gr.Request,
               progress: gr.Progress = gr.Progress()) -> tuple[str, str, str, int, str]:  # noqa: B008
        session = session_of(session, request)
        settings = RenderSettings(num_inference_steps=_optional_int(steps), guidance_scale=_optional_float(guidance),
                                  seed=int(seed or 0), render_only=bool(render_only))
        result = session.render(None if preset == VIEWER_PATH else preset, settings, progress=progress)
        return (str(result.video), str(result.render), str(result.mask), result.version,
                f"Rendered {session.scene.num_frames} frames in {result.seconds:.1f} s.")

    @_friendly
    def poll_viewer_render(session: More4DSession | None, shown: int) -> Any:
        """Pick up renders started from the viewer's "Render this path" button."""
        result = session.last_render if session is not None else None
        if result is None or result.version == shown:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return (str(result.video), str(result.render), str(result.mask), result.version,
                f"Rendered from the viewer in {result.seconds:.1f} s.")

    @_friendly
    def load_path(session: More4DSession | None, file: Any, request: gr.Request) -> tuple[str, str]:
        session = session_of(session, request)
        path = _upload_path(file)
        if path is None:
            return gr.skip(), gr.skip()
        camera = session.load_path(path)
        return VIEWER_PATH, f"Loaded a path with {len(camera.keyframes)} keyframes into the viewer."

    @_friendly
    def preview_preset(session: More4DSession | None, preset: str, request: gr.Request) -> tuple[str, str]:
        """A preset fills the viewer's keyframes; the dropdown goes back to the viewer path, which Render uses."""
        if preset == VIEWER_PATH:
            return gr.skip(), gr.skip()
        session_of(session, request).resolve_path(preset)
        return VIEWER_PATH, (f"Preset *{preset}* loaded into the viewer's camera path: edit it there, then "
                             "Render.")

    def cancel(session: More4DSession | None) -> str:
        if session is not None:
            session.cancel()
        return "Cancelled."

    def close_session(request: gr.Request) -> None:
        service.sessions.close(request.session_hash)

    # 2) layout --------------------------------------------------------------------------------------
    defaults = model_defaults(service.default_model)
    with gr.Blocks(title="more4d: image to 4D") as demo:
        session = gr.State(None, delete_callback=lambda s: s is not None and service.sessions.close(s.id))
        shown_render = gr.State(0)
        gr.Markdown("# more4d\nOne image + a prompt → a 4D point-trajectory scene (4D-STraG) → videos along "
                    "any camera path (4D-ViSM). Generate, explore the scene in the viewer, draw a path, render.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=320):
                image = gr.Image(label="Input image", type="filepath", sources=["upload", "clipboard"], height=260)
                prompt = gr.Textbox(label="Prompt", placeholder="what moves, and how", lines=2, max_length=2000)
                with gr.Accordion("Advanced settings", open=False):
                    negative_prompt = gr.Textbox(label="Negative prompt", lines=1, max_length=2000)
                    model = gr.Dropdown(list(MODELS), value=service.default_model, label="Model")
                    frames = gr.Slider(5, 81, value=defaults["frames"], step=4, label="Frames (4k+1)",
                                       elem_id="more4d-frames")
                    steps = gr.Slider(1, 100, value=defaults["steps"], step=1, label="Denoising steps",
                                      elem_id="more4d-steps")
                    guidance = gr.Slider(0.0, 15.0, value=defaults["guidance"], step=0.5,
                                         label="Guidance (CFG; <= 1 turns it off)")
                    with gr.Row():
                        seed = gr.Number(0, label="Seed", precision=0, minimum=0, scale=3)
                        randomise = gr.Button("Random", scale=1, min_width=60)
                    previews = gr.Checkbox(False, label="Live previews in the viewer every 3 steps (one decode each)")
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary", scale=3)
                    cancel_btn = gr.Button("Cancel", variant="stop", scale=1)
                status = gr.Markdown("Upload an image (or pick an example), describe the motion, press **Generate**.",
                                     elem_id="more4d-status")
                examples = load_examples()
                if examples:
                    gr.Examples(examples, inputs=[image, prompt], label="Examples (TrajScene-Synth)",
                                elem_id="more4d-examples", examples_per_page=4)
            with gr.Column(scale=2, min_width=480):
                viewer = gr.HTML('<p>Starting the 3D viewer…</p>', elem_id="more4d-viewer", label="Viewer")
                with gr.Row(equal_height=True):
                    preset = gr.Dropdown([VIEWER_PATH, *PRESET_NAMES], value=VIEWER_PATH, label="Camera path",
                                         info="Render uses the viewer's path; a preset fills its keyframes",
                                         scale=2)
                    path_file = gr.File(label="Upload path JSON (more4d / nerfstudio)", file_types=[".json"],
                                        scale=2, height=90)
                with gr.Accordion("Render settings", open=False):
                    with gr.Row():
                        render_steps = gr.Slider(1, 100, value=defaults["render_steps"], step=1, label="Steps",
                                                 elem_id="more4d-render-steps")
                        render_guidance = gr.Slider(0.0, 15.0, value=defaults["render_guidance"], step=0.5,
                                                    label="Guidance")
                        render_only = gr.Checkbox(False, label="Point render only (skip inpainting)")
                with gr.Row():
                    render_btn = gr.Button("Render this path", variant="primary", scale=3)
                    render_cancel = gr.Button("Cancel", variant="stop", scale=1)
        with gr.Row(equal_height=True):
            video = gr.Video(label="Final video (4D-ViSM)", autoplay=True, loop=True, interactive=False)
            raw = gr.Video(label="Point render", autoplay=True, loop=True, interactive=False)
            mask = gr.Video(label="Hole mask", autoplay=True, loop=True, interactive=False)
        downloads = gr.Files(label="Downloads: Scene4D, PLY zip, GLB, settings JSON, camera path JSON",
                             interactive=False, height=160)
        timer = gr.Timer(2.0)

        # 3) events ----------------------------------------------------------------------------------
        demo.load(on_load, inputs=[session], outputs=[session, viewer], concurrency_limit=None, api_name="open_viewer")
        demo.unload(close_session)
        model.change(lambda m: tuple(model_defaults(m).values()), inputs=[model],
                     outputs=[frames, steps, guidance, render_steps, render_guidance], concurrency_limit=None,
                     api_visibility="private")
        randomise.click(lambda: random.randrange(2**31), outputs=[seed], concurrency_limit=None, api_visibility="private")
        gen_event = generate_btn.click(
            generate, inputs=[session, image, prompt, negative_prompt, model, frames, steps, guidance, seed, previews],
            outputs=[session, status], preprocess=False, trigger_mode="once", api_name="generate",
            concurrency_id="model",
        ).success(prepare_downloads, inputs=[session], outputs=[downloads], concurrency_limit=None,
                  api_name="downloads")
        render_event = render_btn.click(
            render, inputs=[session, preset, render_steps, render_guidance, seed, render_only],
            outputs=[video, raw, mask, shown_render, status], preprocess=False, trigger_mode="once",
            api_name="render",
            concurrency_id="model",
        ).success(prepare_downloads, inputs=[session], outputs=[downloads], concurrency_limit=None,
                  api_visibility="private")
        for button in (cancel_btn, render_cancel):
            button.click(cancel, inputs=[session], outputs=[status], cancels=[gen_event, render_event],
                         concurrency_limit=None, api_name="cancel",
                         api_visibility="public" if button is cancel_btn else "private")
        preset.input(preview_preset, inputs=[session, preset], outputs=[preset, status], concurrency_limit=None,
                      api_visibility="private")
        path_file.upload(load_path, inputs=[session, path_file], outputs=[preset, status], preprocess=False,
                         concurrency_limit=None, api_name="load_path")
        timer.tick(poll_viewer_render, inputs=[session, shown_render], outputs=[video, raw, mask, shown_render, status],
                   concurrency_limit=None, show_progress="hidden", api_visibility="private")
    return demo
