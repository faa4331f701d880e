"""Launch the page: Gradio queue + the viewer proxy routes. Used by `app.py`, the app tests and the benchmark."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from more4d.errors import InputError
from ui.api import AppService


def launch(service: AppService, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           concurrency: int = 1, max_file_size: str | int = "20mb", block: bool = True) -> Any:
    """Build and launch the page for `service`; returns the running `gr.Blocks` (when `block=False`).

    `concurrency` bounds model jobs (generate + render) running at once; other events are not queued behind
    them. Uploads over `max_file_size` are refused by Gradio before they reach the app.
    """
    os.environ["GRADIO_TEMP_DIR"] = str(service.workdir / "uploads")  # uploads stay in the app's folder
    from ui.layout import CSS
    from ui.sessions import proxy_routes

    demo = build_demo(service)
    demo.queue(default_concurrency_limit=concurrency)
    demo.launch(server_name=host, server_port=port, share=share, css=CSS, max_file_size=max_file_size,
                show_error=True, allowed_paths=[str(service.workdir)], prevent_thread_lock=not block, quiet=not block,
                app_kwargs={"routes": proxy_routes(service.pool)})
    return demo


def build_demo(service: AppService) -> Any:
    """The page bound to `service`: `ui.layout`'s components with `ui.handlers`' events. Launch it with
    `app_kwargs={"routes": proxy_routes(service.pool)}` (as `launch` does)."""
    import gradio as gr

    from ui.handlers import Handlers, bind_events
    from ui.layout import build_page

    handlers = Handlers(service)
    with gr.Blocks(title="more4d: image to 4D") as demo:
        page = build_page(service, delete_session=handlers.delete_state)
        bind_events(demo, page, handlers)
    return demo


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_in_background(service: AppService, **kwargs: Any) -> Iterator[str]:
    """Launch on a free port in this process (threads); yields the page URL; closes app and service on exit."""
    port = free_port()
    demo = launch(service, port=port, block=False, **kwargs)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        service.close()


def tiny_service(scratch: str | os.PathLike, **kwargs: Any) -> AppService:
    """An `AppService` on the tiny preset for tests and benchmarks: the shipped weights (assets/weights/tiny)
    when complete, else random tiny weights written to `scratch` (same cost). `kwargs` go to `AppService`."""
    from more4d.weights import check_weights, save_random_tiny

    try:
        weights = check_weights("tiny")
    except InputError:
        weights = Path(scratch)
        if not any(weights.iterdir()):
            save_random_tiny(weights)
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("viser_port", free_port())
    return AppService(model="tiny", weights_dir=weights, **kwargs)
