"""`python app.py` as a process: start-up mistakes end in one line that says what to do, a second app on a busy
port names --port, and SIGTERM removes the app's temp folder as Ctrl-C does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ui.server import free_port

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SPACE_ID", "MORE4D_MODEL", "HF_HOME")}
    return {**env, "TMPDIR": str(tmp), "HF_HOME": str(tmp / "hf"), "GRADIO_ANALYTICS_ENABLED": "False", **extra}


def _app(tmp: Path, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "app.py"), "--viser-port", str(free_port()), *args]


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    assert proc.returncode != 0 and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.slow
def test_busy_port_then_sigterm_cleans_up(tmp_path):
    port = free_port()
    first = subprocess.Popen(_app(tmp_path, "--port", str(port)), cwd=ROOT, env=_env(tmp_path),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert first.poll() is None, first.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(1)
        assert list(tmp_path.glob("more4d-app-*")), "the app's temp folder is not in TMPDIR"
        second = subprocess.run(_app(tmp_path, "--port", str(port)), cwd=ROOT, env=_env(tmp_path),
                                capture_output=True, text=True, timeout=120)
        err = _one_line_error(second)
        assert f"port {port}" in err and "--port" in err
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert not list(tmp_path.glob("more4d-app-*")), "SIGTERM left the app's temp folder behind"


@pytest.mark.parametrize(("args", "expected"), [
    (["--weights", "{tmp}/tiny_wieghts"], "check the path, or leave out --weights"),
    (["--model", "moge4d"], "run `more4d weights download`"),
])
def test_startup_mistakes_say_what_to_do(tmp_path, args, expected):
    """A mistyped weights folder, and the released model on a machine without its weights (and without
    network: nothing is fetched unless --download), end in one line that says what to do."""
    args = [a.format(tmp=tmp_path) for a in args]
    proc = subprocess.run(_app(tmp_path, "--port", str(free_port()), *args), cwd=ROOT,
                          env=_env(tmp_path, HF_HUB_OFFLINE="1"), capture_output=True, text=True, timeout=180)
    err = proc.stderr.strip()
    assert proc.returncode != 0 and "Traceback" not in err, err
    assert expected in err and "random" not in err
    assert not list(tmp_path.glob("more4d-app-*"))
