"""Which models the app offers, what each can do, and whether each is ready: weights present, downloading, loading.

On a GPU Space the released weights are downloaded once at start-up by the same code as `more4d weights download`
(progress bars in the log, the Hugging Face cache, which `ui.gpu.use_persistent_cache` puts on persistent storage),
while the page already serves and says what is happening; a download that cannot happen (no network) leaves the
page up with instructions, and the tiny model still works.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from more4d.errors import InputError

logger = logging.getLogger(__name__)

# What each preset can and cannot do, shown under the model choice.
MODEL_NOTES = {
    "tiny": ("**tiny** (15 M parameters, runs on a CPU) learned only procedural scenes: balls, boxes and cylinders "
             "that move, bounce, pulse or spin as the caption says (see the examples). On a photo, name its subject "
             "and one of those motions (\"the cat moves right\"): it moves what its depth puts in front, stretching "
             "rather than tearing it, while the rest of the frame drifts a little; it cannot wave a hand or turn a "
             "head, and other views break up where its depth is unsure. Photos need the full-scale `moge4d` model "
             "on a GPU."),
    "moge4d": ("**moge4d**: the authors' released MoGe4D weights (Wan2.1-14B based). Photographs and free-form "
               "prompts, 49 frames at 368x512; minutes per generation and per render on one GPU."),
    "wan2.1-14b": ("**wan2.1-14b**: full-scale weights you trained, in more4d's own layout. Photographs and "
                   "free-form prompts, 49 frames at 368x512; minutes per generation and per render on one GPU."),
}

State = Literal["ready", "downloading", "loading", "failed"]


@dataclass
class ModelState:
    """Whether a model can run now; `detail` says what is happening, or what to do when it failed."""

    state: State = "ready"
    detail: str = ""
    log: list[str] = field(default_factory=list)
    settled: threading.Event = field(default_factory=threading.Event)  # set while "ready" or "failed"

    def __post_init__(self) -> None:
        self.set(self.state, self.detail)

    def set(self, state: State, detail: str = "") -> None:
        self.state, self.detail = state, detail
        if state in ("ready", "failed"):
            self.settled.set()
        else:
            self.settled.clear()

    def check(self, model: str) -> None:
        """Raise `InputError` unless the model can run now (a model that is loading is waited for)."""
        if self.state == "downloading":
            raise InputError(f"the {model} weights are still downloading ({self.detail}); try again when the page "
                             "says they are ready, or pick the tiny model")
        self.settled.wait()
        if self.state == "failed":
            raise InputError(f"the {model} model is not available: {self.detail}")


def released_cache_bytes() -> int:
    """Bytes of the released repositories in the Hugging Face cache so far (finished and partial files)."""
    from huggingface_hub import constants

    from more4d.weights.download import RELEASED_REPOS

    total = 0
    for repo in RELEASED_REPOS:
        folder = Path(constants.HF_HUB_CACHE) / f"models--{repo.hf_repo.replace('/', '--')}" / "blobs"
        if folder.is_dir():
            total += sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    return total


def prepare_in_background(model: str, state: ModelState, *, download: Callable[[], object] | None,
                          check: Callable[[], object], load: Callable[[], object]) -> threading.Thread:
    """Download (when `download` is given), then `check` the weights and `load` the model, on a thread that keeps
    `state` current. User-fixable failures (`InputError`: offline, missing files) become the state's detail."""
    def run() -> None:
        try:
            if download is not None:
                state.set("downloading", "starting")
                download()
            check()
            state.set("loading", "loading the models into memory")
            load()
            state.set("ready")
        except InputError as exc:
            state.set("failed", str(exc))
        except Exception as exc:  # a bug or the hardware (out of memory): the page must not wait on it forever
            logger.exception("preparing the %s model failed", model)
            state.set("failed", f"loading failed ({type(exc).__name__}: {exc}); see the server log")

    thread = threading.Thread(target=run, name=f"more4d-prepare-{model}", daemon=True)
    thread.start()
    return thread


def status_html(models: dict[str, ModelState], hardware: str, downloaded_gb: float | None) -> str:
    """The page's line about the hardware and each model's readiness."""
    parts = []
    for model, st in models.items():
        if st.state == "ready":
            parts.append(f"<b>{model}</b> ready")
        elif st.state == "downloading":
            done = f"; {downloaded_gb:.1f} GB on disk so far" if downloaded_gb is not None else ""
            lines = " ".join(st.log[-3:]) or st.detail
            parts.append(f"<b>{model}</b> downloading once (the page updates itself): {html.escape(lines)}{done}")
        elif st.state == "loading":
            parts.append(f"<b>{model}</b> loading into memory")
        else:
            parts.append(f'<b>{model}</b> <span class="m4d-failed">not available</span>: {html.escape(st.detail)}')
    return f'<div class="m4d-status">Running on {html.escape(hardware)} · {" · ".join(parts)}</div>'
