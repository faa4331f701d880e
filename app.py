"""more4d app: one image + a prompt -> a 4D scene in a live 3D viewer -> videos along your camera paths.

    python app.py                                   # tiny model, http://127.0.0.1:7860
    python app.py --model moge4d --device cuda --host 0.0.0.0     # the released weights (`more4d weights download`)

The viser viewers run on 127.0.0.1 (one per browser session, ports from --viser-port) and are reached through
the Gradio port (`/viser/<token>/`), so only --port needs to be open (also on a Hugging Face Space).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from more4d.errors import InputError
from ui.api import MODELS, AppService


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="tiny", help="default model preset")
    parser.add_argument("--weights", type=Path, default=None, help="weights folder for --model (moge4d: a `weights download --dir` folder; default the HF cache)")
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


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from ui.server import launch

    service = AppService(model=args.model, weights_dir=args.weights, device=args.device,
                         viser_port=args.viser_port, max_sessions=args.max_sessions)
    try:
        service.pipeline(args.model)  # checks the weights folder now (models load on first use)
    except InputError as exc:
        service.close()
        raise SystemExit(f"app.py: error: {exc}") from None
    try:
        launch(service, host=args.host, port=args.port, share=args.share, concurrency=args.concurrency,
               max_file_size=args.max_file_size)
    finally:
        service.close()


if __name__ == "__main__":
    main()
