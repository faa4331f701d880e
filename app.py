"""more4d app: one image + a prompt -> a 4D scene in a live 3D viewer -> videos along your camera paths.

    python app.py                                   # tiny model, http://127.0.0.1:7860
    python app.py --model moge4d --host 0.0.0.0     # the released weights (`more4d weights download`) on a GPU

The viser viewers run on 127.0.0.1 (one per browser session, ports from --viser-port) and are reached through
the Gradio port (`/viser/<token>/`), so only --port needs to be open (also on a Hugging Face Space). On a Space
the app picks its model from the hardware (docs/space.md): the tiny model on CPU, the released weights on a GPU or
ZeroGPU, downloaded once at start-up while the page says so.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from pathlib import Path

MODEL_ENV = "MORE4D_MODEL"


def use_persistent_cache(env: dict[str, str] | None = None, data_dir: str | os.PathLike = "/data") -> Path | None:
    """Point the Hugging Face cache at a Space's persistent storage (`/data`) when there is one and HF_HOME is not
    set, so downloaded weights survive restarts. Runs before huggingface_hub is imported (it reads HF_HOME once).
    Returns the cache folder it set, or None."""
    env = os.environ if env is None else env
    data = Path(data_dir)
    if "HF_HOME" in env or not data.is_dir() or not os.access(data, os.W_OK):
        return None
    env["HF_HOME"] = str(data / ".huggingface")
    return Path(env["HF_HOME"])


def default_model(env: dict[str, str] | None = None) -> str:
    """MORE4D_MODEL if set; on a Hugging Face Space with a GPU (or ZeroGPU) the released weights; else tiny."""
    env = os.environ if env is None else env
    if env.get(MODEL_ENV):
        return env[MODEL_ENV]
    if env.get("SPACE_ID"):
        if env.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true"):
            return "moge4d"  # no GPU is visible in this process before `spaces` patches torch
        import torch

        if torch.cuda.is_available():
            return "moge4d"
    return "tiny"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from more4d.weights.presets import PRESETS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=tuple(PRESETS), default=default_model(),
                        help=f"default model preset (default: ${MODEL_ENV}, else moge4d on a GPU Space, else tiny)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="weights folder for --model (moge4d: a `weights download --dir` folder; default the "
                             "HF cache)")
    parser.add_argument("--download", action=argparse.BooleanOptionalAction, default=bool(os.environ.get("SPACE_ID")),
                        help="download missing released weights at start-up while the page serves "
                             "(default: on a Space)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to bind (0.0.0.0 to serve the network; a Space sets GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--viser-port", type=int, default=8080, help="first port of the per-session viewers")
    parser.add_argument("--max-sessions", type=int, default=8, help="concurrent browser sessions with a viewer")
    parser.add_argument("--concurrency", type=int, default=1, help="model jobs (generate/render) run at once")
    parser.add_argument("--max-file-size", default="20mb", help="largest accepted upload")
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    return parser.parse_args(argv)


def port_in_use(host: str, port: int) -> bool:
    """Whether `port` on `host` is taken (checked before anything slow starts)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (a Space restart, `docker stop`, `kill`) ends the app as Ctrl-C does: the temp folder is removed."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    use_persistent_cache()
    args = parse_args(argv)
    busy = (f"app.py: error: port {args.port} on {args.host} is in use (is the app already running?); "
            "pass --port N (or set GRADIO_SERVER_PORT)")
    if port_in_use(args.host, args.port):
        raise SystemExit(busy)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("ui", "more4d"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, _interrupt)

    import ui.gpu  # noqa: F401 - first of the app's modules: on ZeroGPU `spaces` patches torch before any CUDA work
    from more4d.errors import InputError
    from ui.api import AppService
    from ui.server import launch

    try:
        service = AppService(model=args.model, weights_dir=args.weights, device=args.device,
                             viser_port=args.viser_port, max_sessions=args.max_sessions)
    except InputError as exc:
        raise SystemExit(f"app.py: error: {exc}") from None
    try:
        service.start(download=args.download)
        launch(service, host=args.host, port=args.port, share=args.share, concurrency=args.concurrency,
               max_file_size=args.max_file_size)
    except InputError as exc:
        raise SystemExit(f"app.py: error: {exc}") from None
    except OSError:  # the port was taken between the check above and the launch
        if port_in_use(args.host, args.port):
            raise SystemExit(busy) from None
        raise
    except KeyboardInterrupt:
        print("app.py: stopped", file=sys.stderr)
    finally:
        service.close()


if __name__ == "__main__":
    main()
