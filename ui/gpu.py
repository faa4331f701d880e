"""The app's GPU work, shaped to run unchanged on a CPU, on one dedicated GPU and on Hugging Face ZeroGPU.

On ZeroGPU every call of a `spaces.GPU` function runs in a forked worker process that holds a GPU for that call
only: arguments and result cross the process boundary by pickle, and whatever the call changes in memory stays in
the worker. So the GPU functions here are module-level, take one frozen dataclass of plain values (text, numbers,
arrays, tensors, folder paths) and return one; they report progress and hear "cancel" through files in the job's
folder (`JobChannel`), which the app's process watches; models are loaded in the app's process before the first
call (`PIPELINES`), where the forked worker finds them. Viewers, sessions and Gradio objects never enter a GPU
function. Without ZeroGPU, `spaces.GPU` returns the function unchanged (or `spaces` is not installed) and the same
code runs in the calling thread.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from more4d.errors import InputError

try:  # ZeroGPU patches torch when `spaces` is imported, so this module is imported before any CUDA work
    import spaces
except ImportError:
    spaces = None

F = TypeVar("F", bound=Callable[..., Any])

MEMORY_MODE_ENV = "MORE4D_MEMORY_MODE"
# The smallest card (GiB of total memory) each memory mode fits the full-scale model on: the measured peaks per stage
# (STraG / ViSM: full 59.7 / 45.8, model_cpu_offload 35.4 / 32.0, low_vram 20.7 / 17.4, sequential 13.5 / 2.1 GiB;
# README "Memory modes") plus headroom for the CUDA context. 80 GB cards report 79.2 GiB, 40 GB cards 39.4 GiB,
# ZeroGPU's half H200 69.5 GiB, 24 GB cards 22-23.6 GiB.
MEMORY_MODE_MIN_GIB: tuple[tuple[str, float], ...] = (
    ("full", 72.0), ("model_cpu_offload", 38.0), ("low_vram", 22.0), ("sequential_cpu_offload", 0.0))
MEMORY_MODE_PEAK_GIB = {"full": 59.7, "model_cpu_offload": 35.4, "low_vram": 20.7, "sequential_cpu_offload": 13.5}

# ZeroGPU reservations (seconds) per call: fixed cost (moving the offloaded models to the GPU, depth, encoders,
# decoding) + seconds per denoising step with CFG. Steps are scaled from one H100 (bench/RESULTS.md: STraG 1.65 s,
# ViSM 1.41 s per CFG step at 49x368x512) to ZeroGPU's half H200 (60 of 132 SMs: x2.2), with 25% margin; a step
# without CFG costs half. A reservation that runs out kills the call, one that is too long costs visitors' quota.
ZEROGPU_FIXED_S = {"tiny": 20.0, "full": 60.0}
ZEROGPU_STEP_S = {"tiny": {"strag": 0.5, "vism": 0.5}, "full": {"strag": 4.5, "vism": 3.9}}
ZEROGPU_MAX_S = 300  # ZeroGPU's limit is undocumented and 480 s was refused: a longer job must shrink instead
FULL_SCALE_FRAMES = 49  # the step costs above are measured at the full-scale default of 49 frames


# 1) hardware -------------------------------------------------------------------------------------------------------

def on_zero_gpu(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this process runs on ZeroGPU (Hugging Face sets SPACES_ZERO_GPU, as the `spaces` package reads it)."""
    return env.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def choose_memory_mode(total_gib: float, zero_gpu: bool = False) -> str:
    """The fastest memory mode whose peak fits a card of `total_gib`. On ZeroGPU the models stay in the app's
    memory between calls and move to the GPU inside each call, which the offload modes do; "full" would not."""
    mode = next(m for m, need in MEMORY_MODE_MIN_GIB if total_gib >= need)
    return "model_cpu_offload" if zero_gpu and mode == "full" else mode


@dataclass(frozen=True)
class Hardware:
    """Where the models run: `kind` "cpu" | "gpu" | "zerogpu", the card, and the full-scale memory mode."""

    kind: Literal["cpu", "gpu", "zerogpu"]
    device: str
    name: str
    memory_gib: float | None
    memory_mode: str
    mode_source: str  # why this memory mode: chosen from the card's memory, or the environment variable

    def describe(self) -> str:
        """One line for the page, e.g. "NVIDIA H100 80GB HBM3 (79 GiB), memory mode full (peak about 60 GiB; chosen
        from 79 GiB)"."""
        if self.kind == "cpu":
            return "CPU"
        where = "ZeroGPU, " if self.kind == "zerogpu" else ""
        return (f"{where}{self.name} ({self.memory_gib:.0f} GiB), memory mode {self.memory_mode} for the full-scale "
                f"model (peak about {MEMORY_MODE_PEAK_GIB[self.memory_mode]:.0f} GiB; {self.mode_source})")


def detect_hardware(device: str | None = None, env: Mapping[str, str] = os.environ) -> Hardware:
    """The hardware this app runs on; `device` overrides the default (cuda when available). The memory mode comes
    from the card's memory unless MORE4D_MEMORY_MODE names one."""
    from more4d.pipelines.more4d import MEMORY_MODES

    zero = on_zero_gpu(env)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    override = env.get(MEMORY_MODE_ENV)
    if override is not None and override not in MEMORY_MODES:
        raise InputError(f"{MEMORY_MODE_ENV} must be one of {', '.join(MEMORY_MODES)}, got {override!r}")
    if torch.device(device).type != "cuda":
        return Hardware("cpu", device, "CPU", None, "full", "CPU")
    props = torch.cuda.get_device_properties(torch.device(device))
    gib = props.total_memory / 2**30
    if override is not None:
        mode, source = override, f"set by {MEMORY_MODE_ENV}"
    else:
        mode, source = choose_memory_mode(gib, zero), f"chosen from {gib:.0f} GiB"
    return Hardware("zerogpu" if zero else "gpu", device, props.name, gib, mode, source)


# 2) progress and cancellation across the process boundary -----------------------------------------------------------

class JobChannel:
    """A job's progress (`progress.json`) and cancel request (`cancel`) as files in its folder: the GPU function
    may run in another process, which in-memory callbacks and events do not reach."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def report(self, stage: str, step: int = 0, total: int = 0, previews: int = 0) -> None:
        """Publish the job's stage, its denoising step of `total`, and how many previews were written so far
        (the latest is `preview.safetensors`)."""
        data = {"stage": stage, "step": step, "total": total, "previews": previews, "time": time.time()}
        tmp = self.folder / "progress.json.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.folder / "progress.json")

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder / "progress.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def cancel(self) -> None:
        (self.folder / "cancel").touch()

    @property
    def cancelled(self) -> bool:
        return (self.folder / "cancel").exists()

    def clear(self) -> None:
        """Remove the channel's files (the job's results stay)."""
        for name in ("progress.json", "progress.json.tmp", "cancel", "preview.safetensors"):
            (self.folder / name).unlink(missing_ok=True)


class _Cancelled(Exception):
    """Raised inside a GPU function when the job's cancel file appears; returned as `JobOutput.cancelled`."""


# 3) jobs and the GPU functions ------------------------------------------------------------------------------------

# Pipelines by key ("<service token>/<model>"), put here by `AppService` in the app's process before any GPU call.
PIPELINES: dict[str, Any] = {}
_APP_PID = os.getpid()


def _one_cpu_thread_in_fork() -> None:
    """In a forked worker (ZeroGPU) run CPU ops on one thread, as DataLoader workers do: the OpenMP threads of
    the app's process do not survive the fork, and the worker's first parallel CPU op would wait for them forever."""
    if os.getpid() != _APP_PID:
        torch.set_num_threads(1)


@dataclass(frozen=True, eq=False)
class GenerateJob:
    """One 4D-STraG run. `image`: RGB uint8 `(H, W, 3)`; `steps`/`guidance` are resolved (never None)."""

    pipeline: str
    scale: Literal["tiny", "full"]
    image: np.ndarray
    prompt: str
    negative_prompt: str
    num_frames: int
    steps: int
    guidance: float
    seed: int
    preview_every: int | None
    folder: str


@dataclass(frozen=True, eq=False)
class RenderJob:
    """One 4D-ViSM run of the Scene4D file `scene` along `trajectory` (one camera per scene frame)."""

    pipeline: str
    scale: Literal["tiny", "full"]
    scene: str
    trajectory: Any  # more4d.camera.CameraTrajectory: c2w (F, 4, 4), fov_deg (F,), times (F,) tensors
    prompt: str
    steps: int
    guidance: float
    seed: int
    render_only: bool
    folder: str


@dataclass(frozen=True)
class JobOutput:
    """What a GPU function returns: result files by role, or the user-facing error, or that it was cancelled."""

    files: dict[str, str] | None = None
    error: str | None = None
    cancelled: bool = False


def scale_of(model: str) -> Literal["tiny", "full"]:
    """"tiny" for the embedded preset, "full" for the 14B presets (memory modes and GPU times apply to those)."""
    return "tiny" if model == "tiny" else "full"


def reserve_seconds(scale: str, stage: Literal["strag", "vism"], steps: int, guidance: float,
                    num_frames: int) -> int:
    """The ZeroGPU reservation for one call (see ZEROGPU_STEP_S)."""
    per_step = ZEROGPU_STEP_S[scale][stage] * (1.0 if guidance > 1.0 else 0.5)
    if scale == "full":  # token count grows with the latent frames (Wan VAE: 4x temporal compression)
        per_step *= ((num_frames - 1) // 4 + 1) / ((FULL_SCALE_FRAMES - 1) // 4 + 1)
    return math.ceil(ZEROGPU_FIXED_S[scale] + steps * per_step)


def generate_seconds(job: GenerateJob) -> int:
    return min(reserve_seconds(job.scale, "strag", job.steps, job.guidance, job.num_frames), ZEROGPU_MAX_S)


def render_seconds(job: RenderJob) -> int:
    return min(reserve_seconds(job.scale, "vism", job.steps, job.guidance, len(job.trajectory)), ZEROGPU_MAX_S)


def gpu_task(duration: Callable[[Any], int]) -> Callable[[F], F]:
    """`spaces.GPU(duration=duration)` where `spaces` is installed (effect-free outside ZeroGPU), else nothing."""
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


@gpu_task(duration=generate_seconds)
def generate_on_gpu(job: GenerateJob) -> JobOutput:
    """Run 4D-STraG for `job`; the Scene4D is saved as `job.folder/scene.safetensors` (files["scene"])."""
    _one_cpu_thread_in_fork()
    channel = JobChannel(job.folder)
    try:
        channel.report("Preparing: model, depth, text and image conditions")
        pipe = PIPELINES[job.pipeline]
        previews = 0

        def on_step(pipe_: Any, step: int, timestep: Any, tensors: dict) -> dict:
            nonlocal previews
            if channel.cancelled:
                raise _Cancelled
            if tensors.get("preview") is not None:
                tensors["preview"].save(Path(job.folder) / "preview.safetensors")
                previews += 1
            channel.report("Denoising the trajectories", step + 1, job.steps, previews)
            return tensors

        scene = pipe.generate(job.image, job.prompt, negative_prompt=job.negative_prompt, num_frames=job.num_frames,
                              num_inference_steps=job.steps, guidance_scale=job.guidance,
                              generator=torch.Generator().manual_seed(job.seed), preview_every=job.preview_every,
                              callback_on_step_end=on_step)
        channel.report("Saving the scene")
        return JobOutput({"scene": str(scene.save(Path(job.folder) / "scene.safetensors"))})
    except _Cancelled:
        return JobOutput(cancelled=True)
    except InputError as exc:
        return JobOutput(error=str(exc))


def render_job(job: RenderJob) -> JobOutput:
    """Render `job` (4D-ViSM, or the point render alone) into `job.folder`: video.mp4, render.mp4, mask.mp4."""
    from more4d.io import write_video
    from more4d.scene import Scene4D

    _one_cpu_thread_in_fork()
    channel = JobChannel(job.folder)
    try:
        channel.report("Rendering the points" if job.render_only else "Preparing: model, point render, conditions")
        pipe = PIPELINES[job.pipeline]
        scene = Scene4D.load(job.scene)

        def on_step(pipe_: Any, step: int, timestep: Any, tensors: dict) -> dict:
            if channel.cancelled:
                raise _Cancelled
            channel.report("Inpainting the video", step + 1, job.steps)
            return tensors

        out = pipe.render(scene, job.trajectory, prompt=job.prompt, generator=torch.Generator().manual_seed(job.seed),
                          render_only=job.render_only, num_inference_steps=job.steps, guidance_scale=job.guidance,
                          callback_on_step_end=on_step)
        channel.report("Writing the videos")
        fps = float(getattr(out, "fps", scene.fps))
        files = {name: str(write_video(Path(job.folder) / f"{name}.mp4", _first_video(getattr(out, attr)), fps=fps))
                 for name, attr in (("video", "frames"), ("render", "render"), ("mask", "mask"))}
        return JobOutput(files)
    except _Cancelled:
        return JobOutput(cancelled=True)
    except InputError as exc:
        return JobOutput(error=str(exc))


@gpu_task(duration=render_seconds)
def render_on_gpu(job: RenderJob) -> JobOutput:
    """`render_job` on a GPU (a point render alone needs none: call `render_job`)."""
    return render_job(job)


def _first_video(video: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """`(B, T, H, W[, 3])` -> the first batch item; `(T, H, W[, 3])` unchanged."""
    is_batched = video.ndim == 5 or (video.ndim == 4 and video.shape[-1] != 3)
    return video[0] if is_batched else video
