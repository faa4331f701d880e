"""One viser server per browser session, served through the Gradio port.

A `ViserServer` has one shared scene, so every Gradio session gets its own server bound to 127.0.0.1
(ports from `--viser-port` upward). The page never talks to those ports directly: `proxy_routes()` adds
`/viser/<token>/` (HTTP) and `/viser/<token>` (WebSocket) routes to Gradio's FastAPI app that forward to the
session's server. So the app needs one open port (a Hugging Face Space, `--share`, a remote machine), and a
session's scene is reachable only with its unguessable token.

Sessions are closed on page unload and reaped after `idle_timeout_s` without activity.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import viser

from more4d.errors import InputError

PROXY_PREFIX = "/viser"


@dataclass
class ViewerSlot:
    """A running viser server owned by one session; `token` names its proxy URL."""

    server: viser.ViserServer
    token: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    last_used: float = field(default_factory=time.monotonic)

    @property
    def port(self) -> int:
        return self.server.get_port()

    @property
    def url_path(self) -> str:
        """Path of the viewer page on the Gradio server (relative to its root)."""
        return f"{PROXY_PREFIX}/{self.token}/"


class ViserPool:
    """Starts and stops per-session viser servers, at most `max_servers` at a time.

    >>> pool = ViserPool(base_port=8080, max_servers=4)
    >>> slot = pool.acquire()          # ViserServer on 127.0.0.1:8080 (or the next free port)
    >>> pool.release(slot)
    """

    def __init__(self, base_port: int = 8080, max_servers: int = 8) -> None:
        if max_servers < 1:
            raise InputError(f"max_servers must be >= 1, got {max_servers}")
        self.base_port = base_port
        self.max_servers = max_servers
        self._slots: dict[str, ViewerSlot] = {}
        self._lock = threading.Lock()

    def acquire(self) -> ViewerSlot:
        with self._lock:
            if len(self._slots) >= self.max_servers:
                raise InputError(
                    f"all {self.max_servers} viewer slots are in use; close another tab or try again in a few "
                    "minutes (idle sessions are freed automatically)"
                )
            used = {slot.port for slot in self._slots.values()}
            port = next(p for p in range(self.base_port, self.base_port + 10 * self.max_servers) if p not in used)
            server = viser.ViserServer(host="127.0.0.1", port=port, verbose=False)
            slot = ViewerSlot(server)
            self._slots[slot.token] = slot
            return slot

    def release(self, slot: ViewerSlot) -> None:
        with self._lock:
            if self._slots.pop(slot.token, None) is None:
                return
        slot.server.stop()

    def lookup(self, token: str) -> ViewerSlot | None:
        slot = self._slots.get(token)
        if slot is not None:
            slot.last_used = time.monotonic()
        return slot

    def __len__(self) -> int:
        return len(self._slots)


class SessionRegistry:
    """Maps Gradio session ids to session objects; reaps idle ones on a background thread.

    `factory(session_id)` creates a session; `session.close()` frees it; `session.last_active` (monotonic
    seconds) and `session.busy` (bool) decide reaping.
    """

    def __init__(self, factory: Callable[[str], Any], idle_timeout_s: float = 1800.0) -> None:
        self._factory = factory
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.idle_timeout_s = idle_timeout_s
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_forever, name="more4d-session-reaper", daemon=True)
        self._reaper.start()

    def get(self, session_id: str) -> Any:
        """The session for `session_id`, created on first use."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = self._factory(session_id)
        session.last_active = time.monotonic()
        return session

    def close(self, session_id: str) -> None:
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is not None:
            session.close()

    def close_all(self) -> None:
        self._stop.set()
        for session_id in list(self._sessions):
            self.close(session_id)

    def reap(self, now: float | None = None) -> list[str]:
        """Close sessions idle for longer than `idle_timeout_s`; returns their ids."""
        now = time.monotonic() if now is None else now
        stale = [sid for sid, s in list(self._sessions.items())
                 if not s.busy and now - s.last_active > self.idle_timeout_s]
        for sid in stale:
            self.close(sid)
        return stale

    def evict_one(self, can_evict: Callable[[Any], bool]) -> bool:
        """Close the least recently active idle session for which `can_evict(session)` holds; False if none."""
        candidates = [(s.last_active, sid) for sid, s in list(self._sessions.items())
                      if not s.busy and can_evict(s)]
        if not candidates:
            return False
        self.close(min(candidates)[1])
        return True

    def __len__(self) -> int:
        return len(self._sessions)

    def _reap_forever(self) -> None:
        while not self._stop.wait(min(60.0, self.idle_timeout_s / 2)):
            self.reap()


def proxy_routes(pool: ViserPool) -> list[Any]:
    """Starlette routes forwarding `/viser/<token>/...` (HTTP) and `/viser/<token>` (WebSocket) to the pool.

    Pass them to Gradio as `launch(app_kwargs={"routes": proxy_routes(pool)})`: FastAPI puts them before
    Gradio's own routes.
    """
    import httpx
    import websockets
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    client = httpx.AsyncClient(timeout=30.0)

    async def http_proxy(request: Any) -> Any:
        slot = pool.lookup(request.path_params["token"])
        if slot is None:
            return PlainTextResponse("This viewer session has ended; reload the page.", status_code=404)
        upstream = await client.get(f"http://127.0.0.1:{slot.port}/{request.path_params.get('path', '')}")
        headers = {"cache-control": "no-store"}
        return Response(upstream.content, status_code=upstream.status_code,
                        media_type=upstream.headers.get("content-type"), headers=headers)

    async def ws_proxy(websocket: WebSocket) -> None:
        slot = pool.lookup(websocket.path_params["token"])
        if slot is None:
            await websocket.close(code=4404)
            return
        protocols = list(websocket.scope.get("subprotocols", []))
        async with websockets.connect(f"ws://127.0.0.1:{slot.port}", subprotocols=protocols or None,
                                      max_size=None, compression=None) as upstream:
            await websocket.accept(subprotocol=upstream.subprotocol)

            async def browser_to_viser() -> None:
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    data = message.get("bytes")
                    await upstream.send(data if data is not None else message.get("text", ""))

            async def viser_to_browser() -> None:
                async for data in upstream:
                    slot.last_used = time.monotonic()
                    if isinstance(data, bytes):
                        await websocket.send_bytes(data)
                    else:
                        await websocket.send_text(data)

            tasks = [asyncio.create_task(browser_to_viser()), asyncio.create_task(viser_to_browser())]
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in tasks:  # surface nothing on normal close; disconnects are expected
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect,
                                         websockets.ConnectionClosed, RuntimeError):
                    await task
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close()

    return [
        Route(PROXY_PREFIX + "/{token}/{path:path}", http_proxy),
        WebSocketRoute(PROXY_PREFIX + "/{token}", ws_proxy),
    ]
