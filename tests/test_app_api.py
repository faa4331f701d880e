"""The app's Python API, viewer, path editor and gradio_client endpoints (tiny preset, random tiny weights).

In-process tests of the viewer / path editor / sessions use `make_test_scene` (no model). The gradio_client
tests launch the real page on free ports and drive it like a remote user: generate -> render -> files play;
two sessions at once; bad input everywhere, after which the server still serves. Then the page's promises:
progress with stage, step and ETA; errors that name the user's file and log one line; no folder left by a
refused or cancelled job; input limits from the pipelines' validators.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from more4d.camera import PRESET_NAMES, CameraPath, load_camera_path
from more4d.errors import InputError
from more4d.io import read_video
from more4d.testing import make_test_scene
from ui.api import AppService, Cancelled, GenerateSettings, More4DSession, RenderSettings
from ui.path_editor import PathEditor
from ui.server import free_port
from ui.sessions import SessionRegistry, ViserPool
from ui.testing import SceneOnlyPipeline
from ui.viewer import SceneViewer, c2w_to_wxyz_position, wxyz_position_to_c2w

EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "examples" / "example_1000042.png"


# ------------------------------------------------------------------------------------ viewer + editor
@pytest.fixture
def viewer(tmp_path):
    pool = ViserPool(free_port(), 1)
    slot = pool.acquire()
    viewer = SceneViewer(slot.server)
    yield viewer
    viewer.close()
    pool.release(slot)


def test_viewer_frames_visibility_and_subsampling(viewer):
    scene = make_test_scene(T=5, H=24, W=32)
    seen = []
    viewer.show_scene(scene, on_frame=seen.append)
    assert seen == [0, 1, 2, 3, 4]
    viewer.set_frame(3)
    assert viewer.frame == 3 and [h.visible for h in viewer._frames] == [False, False, False, True, False]
    viewer.set_frame(99)  # clamped
    assert viewer.frame == 4 and int(viewer.gui_frame.value) == 4
    n_visible = int(scene.visibility[4].sum())
    assert viewer._frames[4].points.shape == (n_visible, 3)
    viewer.gui_max_points.value = "10000"  # subsample (still all 768 points: fewer than the cap)
    assert viewer._frames[0].points.shape[0] == int(scene.visibility[0].sum())


def test_c2w_round_trip():
    c2w = np.eye(4)
    c2w[:3, :3] = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    c2w[:3, 3] = [1.0, -2.0, 3.0]
    np.testing.assert_allclose(wxyz_position_to_c2w(*c2w_to_wxyz_position(c2w)), c2w, atol=1e-9)


def test_path_editor_keyframes_presets_and_files(viewer, tmp_path):
    viewer.show_scene(make_test_scene(T=5, H=24, W=32))
    editor = PathEditor(viewer, tmp_path)
    with pytest.raises(InputError, match="at least 2"):
        editor.camera_path()
    moved = np.eye(4)
    moved[:3, 3] = [0.5, 0.0, 0.0]
    editor.add_keyframe(np.eye(4), 50.0)
    editor.add_keyframe(moved, 40.0)
    assert [k.time for k in editor.keyframes] == sorted(k.time for k in editor.keyframes)
    editor.move(0, 1)  # swap poses, keep the time slots
    assert editor.keyframes[0].fov_deg == 40.0 and editor.selected == 1
    editor.update(1, fov_deg=30.0)
    with pytest.raises(InputError, match="already has time"):
        editor.update(1, time=editor.keyframes[0].time)
    # the rendered path is exactly the previewed one
    path = editor.camera_path()
    preview = [n for n in editor._nodes if "preview_" in n.name]
    traj = path.sample(5)
    assert len(preview) == 5
    np.testing.assert_allclose(preview[2].position, traj.c2w[2, :3, 3].numpy(), atol=1e-5)
    for fmt in ("more4d", "nerfstudio"):
        loaded = load_camera_path(editor.save(fmt))
        np.testing.assert_allclose(loaded.sample(5).c2w.numpy(), traj.c2w.numpy(), atol=1e-3)
    for name in PRESET_NAMES:
        assert len(editor.fill_preset(name).keyframes) >= 2 and editor.preset == name
    editor.delete(0)
    assert editor.preset is None  # edited: no longer rescaled as a preset
    with pytest.raises(InputError, match="unknown camera preset"):
        editor.fill_preset("nope")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError):
        editor.load(bad)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 1_000_001)
    with pytest.raises(InputError, match="at most"):
        editor.load(big)


def test_session_registry_reaps_idle_and_pool_limit():
    closed = []

    class Dummy:
        busy = False

        def __init__(self, sid):
            self.id = sid

        def close(self):
            closed.append(self.id)

    registry = SessionRegistry(Dummy, idle_timeout_s=10.0)
    a, b = registry.get("a"), registry.get("b")
    assert registry.get("a") is a
    b.busy = True
    assert registry.reap(now=time.monotonic() + 60) == ["a"] and closed == ["a"] and len(registry) == 1
    registry.get("c")
    assert not registry.evict_one(lambda s: False) and registry.evict_one(lambda s: True)
    assert closed == ["a", "c"]  # b is busy
    registry.close_all()
    pool = ViserPool(free_port(), 1)
    slot = pool.acquire()
    with pytest.raises(InputError, match="viewer slots"):
        pool.acquire()
    pool.release(slot)
    pool.release(slot)  # idempotent


# --------------------------------------------------------------------------------- the served app
def _serve(service):
    from ui.server import serve_in_background

    return serve_in_background(service)


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory):
    """The page on the real tiny preset (shipped weights, else random tiny weights)."""
    from ui.server import tiny_service

    service = tiny_service(tmp_path_factory.mktemp("weights"))
    with _serve(service) as url:
        yield url, service


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The page on `SceneOnlyPipeline`, 3 viewer slots (more sessions evict viewer-less ones)."""
    service = AppService(viser_port=free_port(), max_sessions=3, workdir=tmp_path_factory.mktemp("app"),
                         pipeline_factory=lambda model: SceneOnlyPipeline(), device="cpu")
    with _serve(service) as url:
        yield url, service


def _client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)


def _generate(client, image=EXAMPLE, prompt="a blue box pulses and an orange ball circles", seed=0, frames=5):
    from gradio_client import handle_file

    return client.predict(image=handle_file(str(image)), prompt=prompt, negative_prompt="", model="tiny",
                          frames=frames, steps=1, guidance=None, seed=seed, previews=False, api_name="/generate")


def _expect_error(client, prompt, match, image=EXAMPLE, frames=5):
    with pytest.raises(Exception, match=match):
        _generate(client, image, prompt, frames=frames)


@pytest.mark.slow
def test_client_tiny_generate_render_downloads(tiny_app):
    """End to end on the tiny model: generate -> render a preset path -> videos play, downloads exist."""
    url, service = tiny_app
    client = _client(url)
    status = _generate(client, frames=5)
    assert "Scene ready" in status and "5 frames" in status
    video, raw, mask, status = client.predict("orbit", 1, None, 0, False, api_name="/render")
    assert "Rendered" in status and service.session(client.session_hash).last_render.version == 1
    for file in (video, raw, mask):
        frames, fps = read_video(file)
        assert frames.shape[0] == 5 and fps > 0
    files = client.predict(api_name="/downloads")
    names = {Path(f).name for f in files}
    assert {"scene.safetensors", "scene_ply.zip", "scene.glb", "settings.json", "camera_path.json"} <= names
    assert isinstance(load_camera_path(next(f for f in files if f.endswith("camera_path.json"))), CameraPath)
    settings = json.loads(Path(next(f for f in files if f.endswith("settings.json"))).read_text())
    assert settings["num_frames"] == 5 and settings["num_inference_steps"] == 1


def test_client_two_sessions_isolated(app):
    url, service = app
    a, b = _client(url), _client(url)
    with ThreadPoolExecutor(2) as pool:
        fa = pool.submit(_generate, a, EXAMPLE, "a box pulses", 1)
        fb = pool.submit(_expect_error, b, "", "prompt. is empty")
        assert "Scene ready" in fa.result()
        fb.result()
    assert "Scene ready" in _generate(b, EXAMPLE.with_name("example_1000011.png"), "a cylinder moves", 2)
    sa, sb = service.session(a.session_hash), service.session(b.session_hash)
    assert sa is not sb and sa.workdir != sb.workdir and sa.scene is not sb.scene
    assert sa.prompt == "a box pulses" and sb.prompt == "a cylinder moves"
    assert sa.viewer.server is not sb.viewer.server and sa._slot.token != sb._slot.token
    assert sa.viewer.scene is sa.scene and sb.viewer.scene is sb.scene
    assert not np.allclose(sa.scene.points.numpy(), sb.scene.points.numpy())
    # each viewer is reachable only through its own token
    assert httpx.get(url + sa._slot.url_path.lstrip("/")).status_code == 200
    assert httpx.get(url + "viser/not-a-token/").status_code == 404


def test_client_bad_input_clear_messages(app, tmp_path):
    from gradio_client import handle_file

    url, service = app
    client = _client(url)
    with pytest.raises(Exception, match="no scene to render"):
        client.predict("orbit", 1, None, 0, False, api_name="/render")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    _expect_error(client, "a ball", "could not be read as an image", image=text)
    huge = tmp_path / "huge.png"
    Image.new("RGB", (9000, 8000)).save(huge)  # 72 MP in a small file
    _expect_error(client, "a ball", "too large", image=huge)
    _expect_error(client, "   ", "prompt. is empty")
    _expect_error(client, "a ball", "num_frames. must be 4k\\+1", frames=18)
    malformed = tmp_path / "path.json"
    malformed.write_text('{"keyframes": [{"c2w": "oops"}]}')
    with pytest.raises(Exception, match="camera path file .* is malformed"):
        client.predict(handle_file(str(malformed)), api_name="/load_path")
    # double click: two renders submitted at once in one session are queued and both finish
    assert "Scene ready" in _generate(client)
    jobs = [client.submit("orbit", 1, None, 0, True, api_name="/render") for _ in range(2)]
    assert all("Rendered" in job.result(timeout=120)[3] for job in jobs)
    assert httpx.get(url).status_code == 200 and "Scene ready" in _generate(client, seed=5)


def test_api_double_generate_in_one_session_is_refused(app):
    url, service = app
    session: More4DSession = service.session("direct-api")
    errors = []
    started = threading.Event()

    def slow_progress(fraction, desc=None):
        started.set()
        time.sleep(0.05)

    def first():
        try:
            session.generate(EXAMPLE, "a ball", GenerateSettings(num_frames=5), progress=slow_progress)
        except Exception as exc:  # surfaced by the assertions below
            errors.append(f"first generate failed: {exc!r}")

    thread = threading.Thread(target=first)
    thread.start()
    started.wait(30)
    try:
        session.generate(EXAMPLE, "a ball", GenerateSettings(num_frames=5))
    except InputError as exc:
        errors.append(str(exc))
    thread.join()
    assert len(errors) == 1 and "already running" in errors[0], errors
    assert session.scene is not None and not session.busy
    with pytest.raises(InputError, match="unknown camera preset"):
        session.render("not-a-preset")
    session.cancel()  # the next job starts uncancelled
    assert session.render("orbit").video.is_file()
    service.sessions.close("direct-api")
    assert not session.workdir.exists() and session.closed


def test_service_rejects_unknown_model(tmp_path):
    with pytest.raises(InputError, match="model must be one of"):
        AppService(model="huge", workdir=tmp_path)


@pytest.fixture
def slow_service(tmp_path):
    service = AppService(viser_port=free_port(), max_sessions=2, workdir=tmp_path / "app",
                         pipeline_factory=lambda model: SceneOnlyPipeline(step_s=0.3), device="cpu")
    yield service
    service.close()


def test_progress_names_stage_step_and_time_left(slow_service):
    from ui.handlers import Handlers

    session = slow_service.session("progress")
    seen: list[tuple[float, str]] = []
    session.generate(EXAMPLE, "a ball", GenerateSettings(num_frames=5, num_inference_steps=4),
                     progress=lambda f, d=None: seen.append((f, d)))
    texts = [d for _, d in seen]
    assert any("Generate · Denoising the trajectories: step 2/4" in t for t in texts), texts
    assert any("left in this stage" in t for t in texts), texts
    assert [f for f, _ in seen] == sorted(f for f, _ in seen) and seen[-1][0] == 1.0
    seen.clear()
    session.render("orbit", RenderSettings(num_inference_steps=3), progress=lambda f, d=None: seen.append((f, d)))
    assert any("Render · Inpainting the video: step 2/3" in d for _, d in seen), seen
    generate, render = session.jobs["generate"], session.jobs["render"]
    assert generate.state == render.state == "done" and "5 frames" in generate.text()
    assert 'aria-valuenow="100"' in render.html() and "rendered in" in render.html()
    # the page's timer hands both bars over once, then skips them until they change
    bars = Handlers(slow_service).poll(session, 0, (-1, -1), "")
    assert "Generate: 5 frames" in bars[0] and "Render: 5 frames rendered" in bars[1]
    assert Handlers(slow_service).poll(session, 0, bars[2], "")[:2] == (gr_skip(), gr_skip())


def gr_skip():
    import gradio as gr

    return gr.skip()


def test_refused_and_cancelled_jobs_leave_no_folders(slow_service):
    session = slow_service.session("folders")
    listing = lambda: sorted(p.name for p in session.workdir.iterdir())  # noqa: E731
    assert listing() == []
    for prompt, settings, match in [("", GenerateSettings(num_frames=5), "is empty"),
                                    ("a ball", GenerateSettings(num_frames=18), "4k\\+1"),
                                    ("a ball", GenerateSettings(model="huge"), "model must be one of")]:
        with pytest.raises(InputError, match=match):
            session.generate(EXAMPLE, prompt, settings)
    assert listing() == []

    def cancel_on_step(fraction, desc=None):
        if "step" in (desc or ""):
            session.cancel()

    with pytest.raises(Cancelled):
        session.generate(EXAMPLE, "a ball", GenerateSettings(num_frames=5), progress=cancel_on_step)
    assert listing() == [] and session.jobs["generate"].state == "cancelled"
    session.generate(EXAMPLE, "a ball", GenerateSettings(num_frames=5, num_inference_steps=1))
    scene_files = listing()
    with pytest.raises(Cancelled):
        session.render("orbit", RenderSettings(num_inference_steps=3), progress=cancel_on_step)
    with pytest.raises(InputError, match="guidance must be a number"):
        session.render("orbit", RenderSettings(guidance_scale="lots"))
    assert listing() == scene_files and not any(n.startswith("render_") for n in scene_files)
    assert session.render("orbit", RenderSettings(num_inference_steps=1)).video.parent.name == "render_001"


def test_errors_name_the_file_and_log_one_line(app, tmp_path, caplog, capfd):
    """Toasts name the user's file, never where the server keeps it; a user mistake is one log line."""
    from gradio_client import handle_file

    url, service = app
    client = _client(url)
    malformed = tmp_path / "my_path.json"
    malformed.write_text('{"keyframes": [{"c2w": "oops"}]}')
    notes = tmp_path / "my_notes.png"
    notes.write_text("this is not an image")
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="ui"):
        with pytest.raises(Exception, match="is malformed") as exc:
            client.predict(handle_file(str(malformed)), api_name="/load_path")
        messages = [str(exc.value)]
        with pytest.raises(Exception, match="could not be read as an image") as exc:
            _generate(client, notes, "a ball")
        messages.append(str(exc.value))
    for message, name in zip(messages, ("my_path.json", "my_notes.png")):
        assert name in message and str(service.workdir) not in message
        assert tempfile.gettempdir() + "/" not in message, message
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 2 and all(r.exc_info is None and "\n" not in r.getMessage() for r in refused)


def test_limits_come_from_the_pipelines(app):
    """The page's limits and the API's checks are the pipelines' (one home), not the app's own."""
    import ui.api
    from more4d.models.text_encoder import MAX_PROMPT_CHARS
    from more4d.pipelines.strag import MAX_FRAMES, check_num_frames
    from ui.server import build_demo

    url, service = app
    assert not hasattr(ui.api, "MAX_PROMPT_CHARS")
    blocks = list(build_demo(service).blocks.values())
    assert next(b for b in blocks if b.elem_id == "more4d-frames").maximum == MAX_FRAMES
    assert {b.max_length for b in blocks if isinstance(getattr(b, "max_length", None), int)} == {MAX_PROMPT_CHARS}
    session = service.session("limits")
    with pytest.raises(InputError) as expected:
        check_num_frames(MAX_FRAMES + 4)
    with pytest.raises(InputError, match=str(MAX_FRAMES)) as got:
        session.generate(EXAMPLE, "a ball", GenerateSettings(num_frames=MAX_FRAMES + 4))
    assert str(got.value) == str(expected.value)
    with pytest.raises(InputError, match=f"at most {MAX_PROMPT_CHARS}"):
        session.generate(EXAMPLE, "a" * (MAX_PROMPT_CHARS + 1), GenerateSettings(num_frames=5))


def test_model_note_says_what_the_model_can_do(app):
    from ui.handlers import Handlers
    from ui.models import MODEL_NOTES

    url, service = app
    assert service.models == ("tiny",)
    note = Handlers(service).model_changed("tiny")[-1]
    assert note == MODEL_NOTES["tiny"] and "procedural" in note and "moge4d" in note
    assert "tiny" in service.status_html() and "CPU" in service.status_html()
