"""A local stand-in for the Hugging Face hub's file-resolution endpoints, serving one directory.

``huggingface_hub`` is pointed at it through its endpoint setting; it answers the two calls a
model source makes, as the hub does:

- ``GET /api/models/<org>/<name>/revision/<rev>``: the commit hash and the files (``siblings``
  with sizes; ``.safetensors`` files as LFS entries with their sha256);
- ``GET /<org>/<name>/resolve/<rev>/<path>``: the bytes, honouring ``Range``, at a branch name or
  at the commit hash.

An unknown revision or repository is a 404 with the hub's ``X-Error-Code``; a wrong token a 401.
Requests are counted per path in ``hits``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors",)
INFO = re.compile(r"^/api/models/([^/]+/[^/]+)/revision/([^/]+)$")
RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


@dataclass
class FakeHub:
    repo: str
    root: Path
    commit: str
    branches: dict[str, str]  # branch -> commit
    token: str = ""
    url: str = ""
    hits: Counter[str] = field(default_factory=Counter)

    def revision(self, rev: str) -> str | None:
        rev = unquote(rev)
        return self.commit if rev == self.commit else self.branches.get(rev)

    def siblings(self) -> list[dict[str, object]]:
        files = []
        for path in sorted(p for p in self.root.rglob("*") if p.is_file()):
            entry: dict[str, object] = {
                "rfilename": path.relative_to(self.root).as_posix(),
                "size": path.stat().st_size,
            }
            data = path.read_bytes()
            entry["blobId"] = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            if path.suffix in LFS_SUFFIXES:
                entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            files.append(entry)
        return files


class _HubServer(ThreadingHTTPServer):
    hub: FakeHub


class _Handler(BaseHTTPRequestHandler):
    server: _HubServer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(status, body, {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"})

    def _authorized(self) -> bool:
        return not self.server.hub.token or self.headers.get("Authorization") == f"Bearer {self.server.hub.token}"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.server.hub.hits[path] += 1
        if not self._authorized():
            self._error(401, "RepoNotFound", "Invalid credentials in Authorization header")
            return
        if match := INFO.match(path):
            self._info(match.group(1), match.group(2))
        elif match := RESOLVE.match(path):
            self._resolve(match.group(1), match.group(2), unquote(match.group(3)))
        else:
            self._error(404, "EntryNotFound", "Not found")

    do_HEAD = do_GET

    def _info(self, repo: str, rev: str) -> None:
        if repo != self.server.hub.repo:
            self._error(404, "RepoNotFound", "Repository not found")
            return
        commit = self.server.hub.revision(rev)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {unquote(rev)}")
            return
        body = {"id": repo, "modelId": repo, "sha": commit, "private": False, "siblings": self.server.hub.siblings()}
        self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def _resolve(self, repo: str, rev: str, name: str) -> None:
        file = (self.server.hub.root / name).resolve()
        commit = self.server.hub.revision(rev)
        if (
            repo != self.server.hub.repo
            or commit is None
            or not file.is_relative_to(self.server.hub.root.resolve())
            or not file.is_file()
        ):
            self._error(404, "EntryNotFound", "Entry not found")
            return
        data = file.read_bytes()
        headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        range_header = self.headers.get("Range", "")
        if match := re.match(r"^bytes=(\d+)-(\d*)$", range_header):
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            chunk = data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{start + len(chunk) - 1}/{len(data)}"
            self._send(206, chunk, headers)
            return
        self._send(200, data, headers)


@contextmanager
def fake_hub(root: Path, *, repo: str = "hangar/tiny-llama", token: str = "") -> Iterator[FakeHub]:
    """Serve ``root`` as ``repo`` at branch ``main`` (a fixed commit hash) until the block ends."""
    commit = hashlib.sha1(repo.encode() + b"main").hexdigest()
    hub = FakeHub(repo=repo, root=root, commit=commit, branches={"main": commit}, token=token)
    server = _HubServer(("127.0.0.1", 0), _Handler)
    server.hub = hub
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-hub", daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
