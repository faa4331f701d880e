"""A session's job progress as the page and the viewer show it: stage, denoising step, elapsed time and ETA.

`JobProgress` is updated in the app's process, from its own steps (checking input, streaming the scene) and
from the GPU function's `JobChannel` reports, which `ChannelWatcher` polls (the GPU function may run in a
ZeroGPU worker process).
"""

from __future__ import annotations

import contextvars
import html
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ui.gpu import JobChannel

State = Literal["idle", "running", "done", "failed", "cancelled"]


IDLE_TEXT = {"generate": "No scene yet: upload an image (or pick an example), describe the motion, press Generate.",
             "render": "No video yet: generate a scene, draw or pick a camera path, press Render this path."}


@dataclass
class JobProgress:
    """A session's current (or last) job of one kind, "generate" or "render". `fraction` in [0, 1] is the bar;
    `version` grows with each change."""

    job: str
    state: State = "idle"
    stage: str = ""
    step: int = 0
    total: int = 0
    fraction: float = 0.0
    message: str = ""
    started: float = field(default_factory=time.monotonic)
    stage_started: float = field(default_factory=time.monotonic)
    last_step_at: float = 0.0
    first_step: int = 0
    first_step_at: float = 0.0
    version: int = 0

    def start(self, stage: str) -> None:
        self.state, self.message, self.started, self.fraction = "running", "", time.monotonic(), 0.0
        self.set_stage(stage, 0.0)

    def set_stage(self, stage: str, fraction: float) -> None:
        if stage != self.stage:
            self.stage, self.step, self.total, self.stage_started = stage, 0, 0, time.monotonic()
        self.fraction = max(self.fraction, fraction)
        self.version += 1

    def set_step(self, stage: str, step: int, total: int, fraction: float) -> None:
        self.set_stage(stage, fraction)
        now = time.monotonic()
        if not self.total:  # the stage's first reported step: its time includes the stage's set-up
            self.first_step, self.first_step_at = step, now
        self.step, self.total, self.last_step_at = step, total, now

    def finish(self, state: State, message: str) -> None:
        self.state, self.message = state, message
        self.fraction = 1.0 if state == "done" else self.fraction
        self.version += 1

    def eta_seconds(self) -> float | None:
        """Seconds left in the denoising stage at its mean step time since its first step; None before the
        second step."""
        if self.state != "running" or not self.total or self.step <= self.first_step:
            return None
        per_step = (self.last_step_at - self.first_step_at) / (self.step - self.first_step)
        return per_step * (self.total - self.step)

    def text(self) -> str:
        """One line: "Generate · Denoising the trajectories: step 3/8 · 4 s elapsed · about 9 s left"."""
        if self.state == "idle":
            return IDLE_TEXT[self.job]
        if self.state != "running":
            return f"{self.job.capitalize()}: {self.message}"
        parts = [self.job.capitalize(), self.stage + (f": step {self.step}/{self.total}" if self.total else ""),
                 f"{time.monotonic() - self.started:.0f} s elapsed"]
        eta = self.eta_seconds()
        if eta is not None:
            parts.append(f"about {eta:.0f} s left in this stage")
        return " · ".join(parts)

    def html(self) -> str:
        """The page's progress bar (styled by `ui.layout.CSS`)."""
        width = 100.0 * min(max(self.fraction, 0.0), 1.0)
        return (f'<div class="m4d-progress m4d-{self.state}" role="progressbar" aria-valuemin="0" '
                f'aria-valuemax="100" aria-valuenow="{width:.0f}">'
                f'<div class="m4d-progress-text">{html.escape(self.text())}</div>'
                f'<div class="m4d-progress-track"><div class="m4d-progress-fill" style="width: {width:.1f}%">'
                f'</div></div></div>')


class ChannelWatcher:
    """Polls a `JobChannel` on a thread while the GPU function runs and hands each new report to `on_report`.

    The thread runs in a copy of the caller's context, so Gradio's progress object works from it.
    """

    def __init__(self, channel: JobChannel, on_report: Callable[[dict[str, Any]], None],
                 interval_s: float = 0.2) -> None:
        self.channel, self.on_report, self.interval_s = channel, on_report, interval_s
        self._stop = threading.Event()
        self._last: float | None = None
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._run,), name="more4d-job-watcher",
                                        daemon=True)

    def __enter__(self) -> ChannelWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()  # the last report, written just before the GPU function returned

    def poll(self) -> None:
        report = self.channel.read()
        if report is not None and report["time"] != self._last:
            self._last = report["time"]
            self.on_report(report)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()
