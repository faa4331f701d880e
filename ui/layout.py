"""The Gradio 6 page's components: input + settings, the live viser viewer, camera-path controls, render outputs,
downloads, the status line (hardware, models) and a progress bar under each of Generate and Render.
`ui.handlers` binds their events; `ui.server.build_demo` joins the two.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from more4d.camera import PRESET_NAMES
from more4d.models.text_encoder import MAX_PROMPT_CHARS
from more4d.pipelines.strag import MAX_FRAMES
from ui.api import AppService, sampling_defaults
from ui.models import MODEL_NOTES
from ui.progress import JobProgress

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
VIEWER_PATH = "(path in the viewer)"
CSS = """
#more4d-viewer iframe { width: 100%; height: 640px; border: 1px solid var(--border-color-primary); border-radius: 8px; }
#more4d-status { min-height: 2.5em; }
.m4d-status { font-size: 0.9em; color: var(--body-text-color-subdued); }
.m4d-failed { color: var(--error-text-color); font-weight: 600; }
.m4d-progress { padding: 6px 10px; border: 1px solid var(--border-color-primary); border-radius: 8px;
                background: var(--background-fill-primary); }
.m4d-progress-text { font-size: 0.95em; margin-bottom: 4px; }
.m4d-progress-track { height: 10px; border-radius: 5px; overflow: hidden;
                      background: var(--background-fill-secondary); }
.m4d-progress-fill { height: 100%; background: var(--color-accent); transition: width 0.4s ease; }
.m4d-idle .m4d-progress-fill { background: transparent; }
.m4d-done .m4d-progress-fill { background: #22a06b; }
.m4d-failed .m4d-progress-fill, .m4d-cancelled .m4d-progress-fill { background: var(--error-text-color); }
"""


@dataclass
class Page:
    """The page's components, for `ui.handlers.bind_events`."""

    session: gr.State
    shown_render: gr.State
    shown_progress: gr.State  # the versions of the generate and render bars on the page
    shown_status: gr.State  # the status line on the page
    status_line: gr.HTML
    progress: gr.HTML
    render_progress: gr.HTML
    image: gr.Image
    prompt: gr.Textbox
    model: gr.Dropdown
    model_note: gr.Markdown
    negative_prompt: gr.Textbox
    frames: gr.Slider
    steps: gr.Slider
    guidance: gr.Slider
    seed: gr.Number
    randomise: gr.Button
    previews: gr.Checkbox
    generate_btn: gr.Button
    cancel_btn: gr.Button
    status: gr.Markdown
    viewer: gr.HTML
    preset: gr.Dropdown
    path_file: gr.File
    render_steps: gr.Slider
    render_guidance: gr.Slider
    render_only: gr.Checkbox
    render_btn: gr.Button
    render_cancel: gr.Button
    video: gr.Video
    raw: gr.Video
    mask: gr.Video
    downloads: gr.Files
    timer: gr.Timer


def load_examples() -> list[list[str]]:
    """[[image path, prompt], ...] from assets/examples/prompts.json (empty if the folder is missing)."""
    index = EXAMPLES_DIR / "prompts.json"
    if not index.is_file():
        return []
    return [[str(EXAMPLES_DIR / item["image"]), item["prompt"]] for item in json.loads(index.read_text())]


def model_defaults(model: str) -> dict[str, Any]:
    """The page's initial settings for `model`: the STraG and ViSM sampling defaults of its pipelines."""
    defaults = sampling_defaults(model)
    strag, vism = defaults["strag"], defaults["vism"]
    return {"frames": strag["num_frames"], "steps": strag["num_inference_steps"],
            "guidance": strag["guidance_scale"], "render_steps": vism["num_inference_steps"],
            "render_guidance": vism["guidance_scale"]}


def build_page(service: AppService, delete_session: Any) -> Page:
    """Create the components inside the current `gr.Blocks`. `delete_session(session)` runs when a page's
    session state is dropped."""
    defaults = model_defaults(service.default_model)
    session = gr.State(None, delete_callback=delete_session)
    shown_render, shown_progress, shown_status = gr.State(0), gr.State((-1, -1)), gr.State("")
    gr.Markdown("# more4d\nOne image + a prompt → a 4D point-trajectory scene (4D-STraG) → videos along any camera "
                "path (4D-ViSM). Generate, explore the scene in the viewer, draw a path, render.")
    status_line = gr.HTML(service.status_html(), elem_id="more4d-status-line")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            image = gr.Image(label="Input image", type="filepath", sources=["upload", "clipboard"], height=260)
            prompt = gr.Textbox(label="Prompt", placeholder="what moves, and how", lines=2,
                                max_length=MAX_PROMPT_CHARS)
            model = gr.Dropdown(list(service.models), value=service.default_model, label="Model",
                                elem_id="more4d-model", interactive=len(service.models) > 1)
            model_note = gr.Markdown(MODEL_NOTES[service.default_model], elem_id="more4d-model-note")
            with gr.Accordion("Advanced settings", open=False):
                negative_prompt = gr.Textbox(label="Negative prompt", lines=1, max_length=MAX_PROMPT_CHARS)
                frames = gr.Slider(5, MAX_FRAMES, value=defaults["frames"], step=4, label="Frames (4k+1)",
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
            progress = gr.HTML(JobProgress("generate").html(), elem_id="more4d-progress")
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
                                     scale=2, elem_id="more4d-preset")
                path_file = gr.File(label="Upload path JSON (more4d / nerfstudio)", file_types=[".json"],
                                    scale=2, height=90, elem_id="more4d-path-file")
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
            render_progress = gr.HTML(JobProgress("render").html(), elem_id="more4d-render-progress")
    with gr.Row(equal_height=True):
        video = gr.Video(label="Final video (4D-ViSM)", autoplay=True, loop=True, interactive=False)
        raw = gr.Video(label="Point render", autoplay=True, loop=True, interactive=False)
        mask = gr.Video(label="Hole mask", autoplay=True, loop=True, interactive=False)
    downloads = gr.Files(label="Downloads: Scene4D, PLY zip, GLB, settings JSON, camera path JSON",
                         interactive=False, height=160)
    timer = gr.Timer(1.0)
    return Page(session, shown_render, shown_progress, shown_status, status_line, progress, render_progress, image,
                prompt, model, model_note, negative_prompt, frames, steps, guidance, seed, randomise, previews,
                generate_btn, cancel_btn, status, viewer, preset, path_file, render_steps, render_guidance, render_only,
                render_btn, render_cancel, video, raw, mask, downloads, timer)
