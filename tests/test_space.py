"""The app on a Hugging Face Space: CPU, one GPU, ZeroGPU (`ui.gpu`, `ui.models`, app.py's start-up).

ZeroGPU's contract (the `spaces` package): each `spaces.GPU` call runs in a forked worker; its arguments and its
result are pickled across, so GPU functions are module-level and take and return plain data; models are loaded
in the app's process before the call; without ZeroGPU the decorator is effect-free, and without `spaces` the app
still imports and serves. The ZeroGPU test emulates exactly that boundary (fork + pickle) around the real tiny
model, since a real ZeroGPU worker needs Hugging Face's GPU scheduler.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pickle
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from more4d.camera import CameraTrajectory
from more4d.errors import InputError
from ui import gpu
from ui.api import AppService, GenerateSettings
from ui.server import free_port
from ui.testing import SceneOnlyPipeline

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "assets" / "examples" / "example_1000042.png"
PLAIN = (str, int, float, bool, type(None), np.ndarray, torch.Tensor, CameraTrajectory)


def _load_app_module() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("more4d_app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_script(script: str, timeout: int = 300) -> dict:
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------- hardware choice
def test_memory_mode_from_the_card():
    """Full on 80 GB cards, low-VRAM on 24 GB, model offload between (also ZeroGPU's 70 GB half H200)."""
    assert gpu.choose_memory_mode(79.2) == "full"                     # H100 / A100 80 GB
    assert gpu.choose_memory_mode(139.8) == "full"                    # H200
    assert gpu.choose_memory_mode(69.5, zero_gpu=True) == "model_cpu_offload"
    assert gpu.choose_memory_mode(139.8, zero_gpu=True) == "model_cpu_offload"  # models live in the app's process
    assert gpu.choose_memory_mode(44.4) == gpu.choose_memory_mode(39.4) == "model_cpu_offload"  # L40S, A100 40 GB
    assert gpu.choose_memory_mode(22.2) == "low_vram"                 # A10G / 24 GB cards
    assert gpu.choose_memory_mode(15.6) == "sequential_cpu_offload"
    for mode, need in gpu.MEMORY_MODE_MIN_GIB:  # each band's smallest card holds the mode's measured peak
        assert need == 0.0 or gpu.MEMORY_MODE_PEAK_GIB[mode] < need


def test_hardware_names_the_mode_and_takes_the_override(monkeypatch):
    h100 = types.SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=85_045_460_992)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: h100)
    assert gpu.detect_hardware("cpu").kind == "cpu"
    hw = gpu.detect_hardware("cuda", env={})
    assert (hw.kind, hw.memory_mode) == ("gpu", "full")
    assert "memory mode full" in hw.describe() and "chosen from 79 GiB" in hw.describe()
    hw = gpu.detect_hardware("cuda", env={"SPACES_ZERO_GPU": "true"})
    assert (hw.kind, hw.memory_mode) == ("zerogpu", "model_cpu_offload") and "ZeroGPU" in hw.describe()
    hw = gpu.detect_hardware("cuda", env={gpu.MEMORY_MODE_ENV: "low_vram"})
    assert hw.memory_mode == "low_vram" and f"set by {gpu.MEMORY_MODE_ENV}" in hw.describe()
    with pytest.raises(InputError, match=gpu.MEMORY_MODE_ENV):
        gpu.detect_hardware("cuda", env={gpu.MEMORY_MODE_ENV: "turbo"})


def test_zero_gpu_reservations_fit_the_stage(tmp_path):
    """The default full-scale jobs (50 CFG steps, 49 frames) fit one ZeroGPU call; fewer steps reserve less;
    a job that cannot fit is refused before it costs GPU time."""
    strag = gpu.reserve_seconds("full", "strag", 50, 6.0, 49)
    vism = gpu.reserve_seconds("full", "vism", 50, 6.0, 49)
    assert 200 < vism < strag <= gpu.ZEROGPU_MAX_S
    assert gpu.reserve_seconds("full", "strag", 20, 6.0, 49) < strag
    assert gpu.reserve_seconds("full", "strag", 50, 1.0, 49) < strag  # no CFG: half the batch
    assert gpu.reserve_seconds("tiny", "strag", 8, 1.0, 17) <= 30
    service = AppService(device="cpu", viser_port=free_port(), workdir=tmp_path)
    service.hardware = dataclasses.replace(service.hardware, kind="zerogpu")
    with pytest.raises(InputError, match="lower the steps"):
        service.fits_zero_gpu(gpu.reserve_seconds("full", "strag", 100, 6.0, 49))
    service.close()


# ------------------------------------------------------------------------------------------- ZeroGPU contract
def test_gpu_functions_are_module_level_and_take_plain_data(tmp_path, monkeypatch):
    """What crosses into a GPU function and back pickles and holds no viewer, session or Gradio object."""
    seen = []
    for name in ("generate_on_gpu", "render_on_gpu"):
        fn = getattr(gpu, name)
        assert fn.__qualname__ == name and pickle.loads(pickle.dumps(fn)) is fn

        def record(job, fn=fn):
            out = fn(job)
            seen.append((job, out, all(Path(path).is_file() for path in out.files.values())))
            return out
        monkeypatch.setattr(gpu, name, record)
    service = AppService(device="cpu", viser_port=free_port(), workdir=tmp_path,
                         pipeline_factory=lambda model: SceneOnlyPipeline())
    session = service.session("contract")
    session.generate(EXAMPLE, "a ball", GenerateSettings(num_frames=5, num_inference_steps=2))
    session.render("orbit")
    assert [type(job).__name__ for job, _, _ in seen] == ["GenerateJob", "RenderJob"]
    for job, out, files_written in seen:
        fields = {f.name: getattr(job, f.name) for f in dataclasses.fields(job)}
        assert all(isinstance(v, PLAIN) for v in fields.values()), fields
        assert pickle.loads(pickle.dumps(job)).prompt == job.prompt
        assert pickle.loads(pickle.dumps(out)) == out and out.error is None and files_written
    service.close()


ZERO_GPU_EMULATION = r'''
import functools, json, multiprocessing, pickle, sys, types
calls = []

def GPU(task=None, *, duration=None, size=None):
    """`spaces.GPU` as ZeroGPU runs it: the call happens in a forked worker, arguments and result pickled."""
    def decorate(fn):
        @functools.wraps(fn)
        def in_worker(*args, **kwargs):
            calls.append([fn.__name__, duration(*args, **kwargs)])
            payload = pickle.dumps((args, kwargs))
            ctx = multiprocessing.get_context("fork")
            results = ctx.Queue()
            def work():
                a, k = pickle.loads(payload)
                results.put(pickle.dumps(fn(*a, **k)))
            worker = ctx.Process(target=work, daemon=True)
            worker.start()
            try:
                return pickle.loads(results.get(timeout=300))
            finally:
                worker.kill()
        return in_worker
    return decorate if task is None else decorate(task)

sys.modules["spaces"] = types.SimpleNamespace(GPU=GPU)
import httpx
from ui import gpu
from ui.api import AppService, Cancelled, GenerateSettings, RenderSettings
from ui.server import free_port, serve_in_background

service = AppService(device="cpu", viser_port=free_port())
service.pipeline("tiny").strag  # loaded in the app's process, as on ZeroGPU, before any GPU call
session = service.session("zero")
steps = []
result = session.generate("assets/examples/example_1000042.png", "a blue box pulses",
                          GenerateSettings(num_frames=5, num_inference_steps=2),
                          progress=lambda f, d=None: steps.append(d))
video = session.render("orbit", RenderSettings(num_inference_steps=1)).video.is_file()
def cancel_on_step(fraction, desc=None):
    if "step" in (desc or ""):
        session.cancel()
try:
    session.generate("assets/examples/example_1000042.png", "a blue box pulses",
                     GenerateSettings(num_frames=5, num_inference_steps=4), progress=cancel_on_step)
    cancelled = False
except Cancelled:
    cancelled = True
folders = sorted(p.name for p in session.workdir.iterdir())
with serve_in_background(service) as url:  # closes the service (and its folder) at the end
    served = httpx.get(url).status_code
print(json.dumps({"calls": calls, "steps": [s for s in steps if "step" in s], "scene": session.scene.num_frames,
                  "video": video, "cancelled": cancelled, "folders": folders, "served": served}))
'''


@pytest.mark.slow
def test_zero_gpu_process_boundary_with_the_tiny_model():
    """Under an emulated ZeroGPU (`spaces.GPU` = fork + pickle), generate and render reach the forked worker's
    model, their progress and results come back, a cancel crosses into the worker, the page serves."""
    out = _run_script(ZERO_GPU_EMULATION, timeout=600)
    assert [name for name, _ in out["calls"]] == ["generate_on_gpu", "render_on_gpu", "generate_on_gpu"]
    assert all(0 < seconds <= gpu.ZEROGPU_MAX_S for _, seconds in out["calls"])
    assert any("Denoising the trajectories: step 2/2" in s for s in out["steps"]), out["steps"]
    assert out["scene"] == 5 and out["video"] and out["cancelled"] and out["served"] == 200
    assert out["folders"] == ["render_001", "scene.safetensors", "settings.json"]


def test_app_imports_and_serves_without_spaces():
    script = r'''
import json, sys
sys.modules["spaces"] = None  # not installed
import httpx
from ui import gpu
from ui.server import serve_in_background, tiny_service
import tempfile
with serve_in_background(tiny_service(tempfile.mkdtemp())) as url:
    served = httpx.get(url).status_code
print(json.dumps({"spaces": gpu.spaces is None, "plain": gpu.generate_on_gpu.__module__ == "ui.gpu",
                  "served": served}))
'''
    assert _run_script(script) == {"spaces": True, "plain": True, "served": 200}


def test_spaces_installed_outside_zero_gpu_is_effect_free():
    import spaces  # pinned in requirements-dev.txt

    assert gpu.spaces is spaces and not gpu.on_zero_gpu({})
    assert not hasattr(gpu.generate_on_gpu, "__wrapped__")  # spaces.GPU returned the function itself


# ------------------------------------------------------------------------------------------------ start-up
def test_startup_without_weights_or_network_says_what_to_do(tmp_path, monkeypatch):
    """No released weights and no network: without --download a one-line instruction; with it the page serves,
    says the model is not available and how to get it, and the tiny model still works."""
    import httpx
    from huggingface_hub import constants

    from ui.server import serve_in_background

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    def factory(model):
        assert model == "tiny", "a pipeline was built for a model that cannot run"
        return SceneOnlyPipeline()

    service = AppService(model="moge4d", device="cpu", viser_port=free_port(), workdir=tmp_path / "app",
                         pipeline_factory=factory)
    assert service.models == ("moge4d", "tiny")
    with pytest.raises(InputError, match="run `more4d weights download`.*--download"):
        service.start(download=False)
    service.start(download=True)
    state = service.models_state["moge4d"]
    assert state.settled.wait(60) and state.state == "failed"
    assert "HF_HUB_OFFLINE" in state.detail and "more4d weights download --dir DIR" in state.detail
    assert "not available" in service.status_html()
    session = service.session("offline")
    with pytest.raises(InputError, match="not available: HF_HUB_OFFLINE"):
        session.generate(EXAMPLE, "a ball", GenerateSettings(model="moge4d", num_frames=5))
    session.generate(EXAMPLE, "a ball", GenerateSettings(model="tiny", num_frames=5, num_inference_steps=1))
    with serve_in_background(service) as url:
        config = httpx.get(url + "config").text
    assert "not available" in config and "weights download" in config


def test_startup_download_shows_its_size_on_the_page(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    release = threading.Event()

    def downloader(dir, *, log):
        log("total from Hugging Face: 40 files, 90.1 GB -> the Hugging Face cache")
        release.wait(30)

    service = AppService(model="moge4d", device="cpu", viser_port=free_port(), workdir=tmp_path / "app",
                         pipeline_factory=lambda model: SceneOnlyPipeline())
    service.start(download=True, downloader=downloader)
    state = service.models_state["moge4d"]
    try:
        assert "downloading once" in service.status_html() and "90.1 GB" in service.status_html()
        with pytest.raises(InputError, match="still downloading"):
            service.session("wait").generate(EXAMPLE, "a ball", GenerateSettings(model="moge4d", num_frames=5))
    finally:
        release.set()
    assert state.settled.wait(30) and state.state == "failed" and "missing" in state.detail  # fake: no files
    service.close()


def test_space_defaults(tmp_path):
    app = _load_app_module()
    data = tmp_path / "data"
    data.mkdir()
    env: dict[str, str] = {}
    assert app.use_persistent_cache(env, data) == data / ".huggingface"
    assert env["HF_HOME"] == str(data / ".huggingface")
    assert app.use_persistent_cache({"HF_HOME": "/elsewhere"}, data) is None
    assert app.use_persistent_cache({}, tmp_path / "no_storage") is None
    assert app.default_model({}) == "tiny"
    assert app.default_model({"SPACE_ID": "me/more4d", "SPACES_ZERO_GPU": "true"}) == "moge4d"
    assert app.default_model({"SPACE_ID": "me/more4d"}) == ("moge4d" if torch.cuda.is_available() else "tiny")
    assert app.default_model({"SPACE_ID": "me/more4d", "MORE4D_MODEL": "tiny"}) == "tiny"
