"""The app's responsiveness on the tiny preset: generate / render latency, viewer frame switching, 4 users.

    python bench/bench_app.py                         # CPU, tiny preset (shipped or random tiny weights)
    python bench/bench_app.py --device cuda --users 8 --rounds 3

1. Generate (17x256x256, preset steps): seconds from the call to the first points in the viewer (a denoising
   preview, or frame 0 with --no-previews) and to the finished scene (streamed to the viewer, saved).
2. Render a 17-frame "orbit" path: the full 4D-ViSM and the point render only (three mp4s written).
3. Viewer frame switch on a 256x256x17 scene (65,536 points a frame): server-side `set_frame` time, and the
   round trip to a WebSocket client connected to the viewer (the message that flips visibility arrives).
4. N concurrent gradio_client users, each generate + render (`--rounds` times): all complete, throughput
   (jobs per minute) and p50 / p95 request latency. The app runs with its default queue concurrency (1).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from more4d.testing import make_test_scene
from ui.api import GenerateSettings, RenderSettings
from ui.server import free_port, serve_in_background, tiny_service
from ui.sessions import ViserPool
from ui.viewer import SceneViewer

EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "examples" / "example_1000042.png"
PROMPT = "a blue box pulses and an orange ball circles clockwise"


def bench_generate_render(args: argparse.Namespace, scratch: Path) -> None:
    service = tiny_service(scratch, device=args.device)
    session = service.session("bench")
    settings = GenerateSettings(num_inference_steps=args.steps, preview_every=None if args.no_previews else 3)
    session.generate(EXAMPLE, PROMPT, settings)  # warm-up: loads the models
    runs = [session.generate(EXAMPLE, PROMPT, settings) for _ in range(args.repeats)]
    first = statistics.median(r.first_points_seconds for r in runs)
    full = statistics.median(r.seconds for r in runs)
    print(f"generate: first points {first:.2f} s, finished scene {full:.2f} s (median of {args.repeats})")
    for render_only in (False, True):
        render = RenderSettings(render_only=render_only)
        session.render("orbit", render)  # warm-up
        sec = statistics.median(session.render("orbit", render).seconds for _ in range(args.repeats))
        print(f"render 17-frame orbit ({'point render only' if render_only else '4D-ViSM'}): {sec:.2f} s")
    service.close()


def bench_frame_switch(args: argparse.Namespace) -> None:
    import websockets

    pool = ViserPool(free_port(), 1)
    slot = pool.acquire()
    viewer = SceneViewer(slot.server)
    viewer.show_scene(make_test_scene(T=17, H=256, W=256))
    server_ms, round_trip_ms = [], []

    async def client() -> None:
        async with websockets.connect(f"ws://127.0.0.1:{slot.port}", subprotocols=["viser-v1.1.1"],
                                      max_size=None) as ws:
            deadline = time.monotonic() + 30  # drain the initial scene (17 frames of points)
            while time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(ws.recv(), 1.0)
                except TimeoutError:
                    break
            for _ in range(args.switches):
                t0 = time.perf_counter()
                await asyncio.to_thread(viewer.set_frame, (viewer.frame + 1) % 17)
                server_ms.append((time.perf_counter() - t0) * 1e3)
                await asyncio.wait_for(ws.recv(), 5.0)
                round_trip_ms.append((time.perf_counter() - t0) * 1e3)
                while True:  # drop the rest of this switch's messages
                    try:
                        await asyncio.wait_for(ws.recv(), 0.05)
                    except TimeoutError:
                        break

    asyncio.run(client())
    viewer.close()
    pool.release(slot)
    print(f"frame switch (256x256x17): server {statistics.median(server_ms):.2f} ms median, "
          f"client round trip {statistics.median(round_trip_ms):.1f} ms median / "
          f"{np.percentile(round_trip_ms, 95):.1f} ms p95 ({args.switches} switches)")


def bench_users(args: argparse.Namespace, scratch: Path) -> None:
    from gradio_client import Client, handle_file

    service = tiny_service(scratch, device=args.device, max_sessions=args.users + 1)
    latencies: dict[str, list[float]] = {"generate": [], "render": []}
    lock = threading.Lock()
    with serve_in_background(service) as url:
        def user(i: int) -> int:
            client = Client(url, verbose=False)
            for r in range(args.rounds):
                t0 = time.perf_counter()
                client.predict(image=handle_file(str(EXAMPLE)), prompt=PROMPT, negative_prompt="", model="tiny",
                               frames=17, steps=args.steps, guidance=None, seed=i * 100 + r, previews=True,
                               api_name="/generate")
                t1 = time.perf_counter()
                client.predict("orbit", None, None, 0, False, api_name="/render")
                t2 = time.perf_counter()
                with lock:
                    latencies["generate"].append(t1 - t0)
                    latencies["render"].append(t2 - t1)
            return args.rounds

        Client(url, verbose=False).predict(api_name="/open_viewer")  # warm the page
        start = time.perf_counter()
        with ThreadPoolExecutor(args.users) as pool:
            done = sum(pool.map(user, range(args.users)))
        wall = time.perf_counter() - start
    jobs = 2 * done
    print(f"{args.users} users x {args.rounds} rounds: {done}/{args.users * args.rounds} complete in {wall:.1f} s, "
          f"{60 * jobs / wall:.1f} jobs/min")
    for name, values in latencies.items():
        print(f"  {name}: p50 {np.percentile(values, 50):.1f} s, p95 {np.percentile(values, 95):.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--switches", type=int, default=50)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-previews", action="store_true", help="no denoising previews in the viewer")
    parser.add_argument("--only", choices=("generate", "switch", "users"), default=None)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="more4d-bench-app-"))
    if args.only in (None, "switch"):
        bench_frame_switch(args)
    if args.only in (None, "generate"):
        bench_generate_render(args, scratch)
    if args.only in (None, "users"):
        bench_users(args, scratch)


if __name__ == "__main__":
    main()
