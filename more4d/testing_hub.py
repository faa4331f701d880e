"""A local fake Hugging Face Hub: serves folders as model repos to the real `huggingface_hub` client.

It implements what `huggingface_hub` 2.4 calls for `model_info`, `list_repo_tree`, `hf_hub_download` and
`snapshot_download` (plain HTTP downloads; no Xet headers are ever sent, so the Xet path stays off):

- `GET /api/models/{repo_id}` and `/api/models/{repo_id}/revision/{rev}`: `id`, `sha`, `siblings`
  (with `size`, `blobId`, `lfs` when `?blobs=true`);
- `GET /api/models/{repo_id}/tree/{rev}[/{path}]`: the file and folder listing (`?recursive=true`);
- `HEAD`/`GET /{repo_id}/resolve/{rev}/{path}`: `X-Repo-Commit`, `ETag`, `Content-Length`, `Accept-Ranges`;
  LFS-like files (weights, or over 10 MB) also carry `X-Linked-Etag` (their sha256) and `X-Linked-Size`,
  as the real Hub's redirect does. `Range: bytes=START-[END]` gets a 206.

Each repo has a single commit (the default branch "main"), whose sha is derived from the files' contents.

Example (pytest)::

    with FakeHub({"org/model": tmp_path / "model"}) as hub:
        hub.activate(monkeypatch, hf_home=tmp_path / "hf_home")
        huggingface_hub.snapshot_download("org/model")
        hub.cut_next_get("org/model", "model.safetensors", after_bytes=100)  # next GET of it drops mid-file
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    import pytest

# Extensions the Hub's default .gitattributes stores with git-LFS (the ones used by weight files).
LFS_SUFFIXES = frozenset({".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf"})
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub refuses larger files outside LFS
_CHUNK = 1 << 20


@dataclass(frozen=True)
class HubRequest:
    """One request the fake Hub received (`path` is URL-decoded, without the query string)."""

    method: str
    path: str
    headers: dict[str, str]

    @property
    def range(self) -> str | None:
        """The `Range` header, e.g. "bytes=100-", or None."""
        return self.headers.get("range")


@dataclass(frozen=True)
class _File:
    path: str  # "/"-separated, relative to the repo root
    local: Path
    size: int
    blob_id: str  # git blob sha1 (of the LFS pointer for LFS files)
    sha256: str | None  # set for LFS files

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id


@dataclass
class _Repo:
    repo_id: str
    sha: str
    files: dict[str, _File] = field(default_factory=dict)


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _scan_repo(repo_id: str, root: Path) -> _Repo:
    if not root.is_dir():
        raise ValueError(f"`repos[{repo_id!r}]` must be a folder, got {str(root)!r}")
    files = {}
    for local in sorted(p for p in root.rglob("*") if p.is_file()):
        path = local.relative_to(root).as_posix()
        data = local.read_bytes()
        if local.suffix in LFS_SUFFIXES or len(data) >= LFS_MIN_SIZE:
            sha256 = hashlib.sha256(data).hexdigest()
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n"
            files[path] = _File(path, local, len(data), _git_blob_sha1(pointer.encode()), sha256)
        else:
            files[path] = _File(path, local, len(data), _git_blob_sha1(data), None)
    commit = hashlib.sha1(repo_id.encode() + b"".join(f"{f.path}\0{f.blob_id}\n".encode() for f in files.values()))
    return _Repo(repo_id, commit.hexdigest(), files)


class FakeHub:
    """Serve local folders as Hugging Face model repos on 127.0.0.1 (a context manager; see the module doc).

    Args:
        repos: repo id ("org/name") -> local folder whose files (recursively) make up the repo.

    Attributes:
        endpoint: the base URL ("http://127.0.0.1:PORT") to use as `HF_ENDPOINT`.
        requests: every request received, in order (see `HubRequest`).
    """

    def __init__(self, repos: dict[str, str | os.PathLike]) -> None:
        self.repos = {repo_id: _scan_repo(repo_id, Path(root)) for repo_id, root in repos.items()}
        self.requests: list[HubRequest] = []
        self._faults: dict[tuple[str, str], tuple[str, int]] = {}  # (repo, path) -> ("cut" | "status", value)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> FakeHub:
        """Start serving on a free port (also done by `with FakeHub(...)`)."""
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="FakeHub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: later requests to `endpoint` fail to connect (an unreachable Hub)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- test controls ----------------------------------------------------------------------------------
    def activate(self, monkeypatch: pytest.MonkeyPatch, *, hf_home: str | os.PathLike) -> None:
        """Point `huggingface_hub` at this server and at an empty `hf_home` cache, undone by `monkeypatch`.

        `huggingface_hub.constants` reads `HF_ENDPOINT` and `HF_HOME` when it is first imported, so setting
        the environment variables alone is not enough: the derived constants are patched too.
        """
        from huggingface_hub import constants

        monkeypatch.setenv("HF_ENDPOINT", self.endpoint)
        monkeypatch.setattr(constants, "ENDPOINT", self.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            self.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        use_hf_home(monkeypatch, hf_home)
        set_hf_offline(monkeypatch, False)

    def cut_next_get(self, repo_id: str, filename: str, *, after_bytes: int) -> None:
        """The next GET of `filename` sends the full `Content-Length` but only `after_bytes` bytes, then closes."""
        self._add_fault(repo_id, filename, "cut", after_bytes)

    def fail_next_get(self, repo_id: str, filename: str, *, status: int = 500) -> None:
        """The next GET of `filename` answers HTTP `status` (HEAD requests are unaffected)."""
        self._add_fault(repo_id, filename, "status", status)

    def gets(self, filename: str | None = None) -> list[HubRequest]:
        """The `/resolve/` GET requests received, optionally only those of `filename`."""
        return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path
                and (filename is None or r.path.endswith("/" + filename))]

    def _add_fault(self, repo_id: str, filename: str, kind: str, value: int) -> None:
        if filename not in self.repos[repo_id].files:
            raise ValueError(f"`filename` {filename!r} is not a file of {repo_id!r}")
        with self._lock:
            self._faults[(repo_id, filename)] = (kind, value)

    def _pop_fault(self, repo_id: str, filename: str) -> tuple[str, int] | None:
        with self._lock:
            return self._faults.pop((repo_id, filename), None)


def use_hf_home(monkeypatch: pytest.MonkeyPatch, hf_home: str | os.PathLike) -> None:
    """Make `huggingface_hub` use `hf_home` (cache, token, state files) instead of the user's, undone by `monkeypatch`."""
    from huggingface_hub import constants

    home = str(hf_home)
    monkeypatch.setenv("HF_HOME", home)
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_XET_CACHE", "HF_TOKEN_PATH", "HF_TOKEN",
                 "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # every constant huggingface_hub derives from HF_HOME at import (a real token is never sent to the fake Hub)
    derived = {"HF_HOME": "", "HF_HUB_CACHE": "hub", "HUGGINGFACE_HUB_CACHE": "hub", "default_cache_path": "hub",
               "HF_ASSETS_CACHE": "assets", "HUGGINGFACE_ASSETS_CACHE": "assets",
               "default_assets_cache_path": "assets", "HF_XET_CACHE": "xet", "default_xet_cache_path": "xet",
               "HF_TOKEN_PATH": "token", "HF_STORED_TOKENS_PATH": "stored_tokens",
               "CHECK_FOR_UPDATE_DONE_PATH": ".check_for_update_done",
               "CHECK_FOR_SKILL_UPDATE_DONE_PATH": ".check_for_skill_update_done",
               "AGENT_HARNESSES_PATH": ".agent_harnesses.json"}
    for name, sub in derived.items():
        if hasattr(constants, name):  # some are newer than others
            monkeypatch.setattr(constants, name, os.path.join(home, sub) if sub else home)


def set_hf_offline(monkeypatch: pytest.MonkeyPatch, offline: bool = True) -> None:
    """Set `HF_HUB_OFFLINE` as if it had been in the environment when `huggingface_hub` was imported."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, hub: FakeHub) -> None:
        self.hub = hub
        super().__init__(address, handler)


_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a stopped server leaves no kept-alive connection behind.
    protocol_version = "HTTP/1.0"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    # --- routing --------------------------------------------------------------------------------------
    def _dispatch(self, head: bool) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        path = unquote(url.path)
        hub.requests.append(HubRequest(self.command, path, {k.lower(): v for k, v in self.headers.items()}))
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if path.startswith("/api/models/"):
            if head:
                return self._send_json({}, status=405)
            return self._api(path[len("/api/models/"):], query)
        for repo in hub.repos.values():
            prefix = f"/{repo.repo_id}/resolve/"
            if path.startswith(prefix):
                revision, _, filename = path[len(prefix):].partition("/")
                return self._resolve(repo, revision, filename, head)
        self._send_error(404, "RepoNotFound", f"{path} is not served by this fake Hub")

    def _find_repo(self, rest: str) -> tuple[_Repo, str] | None:
        for repo in self.server.hub.repos.values():
            if rest == repo.repo_id or rest.startswith(repo.repo_id + "/"):
                return repo, rest[len(repo.repo_id):].lstrip("/")
        return None

    def _api(self, rest: str, query: dict[str, str]) -> None:
        found = self._find_repo(rest)
        if found is None:
            return self._send_error(404, "RepoNotFound", "Repository not found")
        repo, rest = found
        kind, _, tail = rest.partition("/")
        if kind == "":
            return self._send_json(self._model_info(repo, query))
        revision, _, subpath = tail.partition("/")
        if revision not in ("main", repo.sha):
            return self._send_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if kind == "revision" and not subpath:
            return self._send_json(self._model_info(repo, query))
        if kind == "tree":
            return self._send_json(self._tree(repo, subpath, query.get("recursive", "").lower() == "true"))
        self._send_error(404, None, f"unknown API route {rest!r}")

    # --- API payloads ---------------------------------------------------------------------------------
    @staticmethod
    def _model_info(repo: _Repo, query: dict[str, str]) -> dict:
        with_blobs = query.get("blobs", "").lower() == "true"
        siblings = []
        for f in repo.files.values():
            sibling: dict = {"rfilename": f.path}
            if with_blobs:
                sibling |= {"size": f.size, "blobId": f.blob_id}
                if f.sha256:
                    sibling["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
            siblings.append(sibling)
        return {"_id": repo.sha[:24], "id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.sha,
                "private": False, "gated": False, "disabled": False, "tags": [], "siblings": siblings}

    @staticmethod
    def _tree(repo: _Repo, subpath: str, recursive: bool) -> list[dict]:
        prefix = subpath.rstrip("/") + "/" if subpath else ""
        folders: set[str] = set()
        entries = []
        for f in repo.files.values():
            if not f.path.startswith(prefix):
                continue
            parts = f.path[len(prefix):].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entry = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
                if f.sha256:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
                entries.append(entry)
        return [{"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "path": p}
                for p in sorted(folders)] + entries

    # --- file download --------------------------------------------------------------------------------
    def _resolve(self, repo: _Repo, revision: str, filename: str, head: bool) -> None:
        commit = {"X-Repo-Commit": repo.sha}
        if revision not in ("main", repo.sha):
            return self._send_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        f = repo.files.get(filename)
        if f is None:
            return self._send_error(404, "EntryNotFound", f"{filename} does not exist", commit)
        headers = commit | {"ETag": f'"{f.etag}"', "Accept-Ranges": "bytes",
                            "Content-Type": "application/octet-stream"}
        if f.sha256:
            headers |= {"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)}
        start, end, status = 0, f.size - 1, 200
        if (requested := self.headers.get("Range")) is not None:
            match = _RANGE.match(requested.strip())
            if match is None or int(match[1]) >= f.size:
                return self._send_error(416, None, f"bad Range {requested!r}",
                                        headers | {"Content-Range": f"bytes */{f.size}"})
            start, end, status = int(match[1]), min(int(match[2] or f.size - 1), f.size - 1), 206
            headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
        fault = None if head else self.server.hub._pop_fault(repo.repo_id, filename)
        if fault is not None and fault[0] == "status":
            return self._send_error(fault[1], None, "injected failure", commit)
        self.send_response(status)
        for key, value in (headers | {"Content-Length": str(end - start + 1)}).items():
            self.send_header(key, value)
        self.end_headers()
        if head:
            return
        limit = end - start + 1 if fault is None else min(fault[1], end - start + 1)
        with f.local.open("rb") as stream:
            stream.seek(start)
            while limit > 0 and (chunk := stream.read(min(_CHUNK, limit))):
                self.wfile.write(chunk)
                limit -= len(chunk)
        if fault is not None:  # drop the connection mid-body, as a network outage would
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    # --- responses ------------------------------------------------------------------------------------
    def _send_json(self, payload: object, status: int = 200) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        for key, value in ({"X-Error-Message": message} | ({"X-Error-Code": code} if code else {})
                           | (headers or {})).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
