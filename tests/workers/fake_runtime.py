"""A stand-in for ``python -m workers.runtime`` that starts in milliseconds (no torch).

Same command line and the same contract the engine relies on: progress lines on stderr
(``hangar-runtime: stage=...``), ``GET /health`` 503 while "loading" then 200, exit 1 when the
model directory is unusable, exit 0 on SIGTERM, and the bearer token (``--token-file``, or
``HANGAR_RUNTIME_TOKEN``) that every path but ``/health`` requires. ``HANGAR_RUNTIME_FAKE_READY_DELAY``
sets the loading time (a ``HANGAR_RUNTIME_*`` name, so the local driver passes it on).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from workers.runtime.auth import load_token


def stage(name: str, **fields: object) -> None:
    extra = "".join(f" {k}={v}" for k, v in fields.items())
    print(f"hangar-runtime: stage={name}{extra}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--served-model-name", default="fake")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--quantization", default="none")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--token-file", type=Path)
    args = parser.parse_args()
    token = load_token(args.token_file, os.environ)
    stage("starting", model=args.model, port=args.port)
    if not (args.model / "config.json").is_file():
        stage("failed", error="no config.json")
        return 1
    ready_at = time.monotonic() + float(os.environ.get("HANGAR_RUNTIME_FAKE_READY_DELAY", "0.3"))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                ok = time.monotonic() >= ready_at
                self.send_response(200 if ok else 503)
                self.end_headers()
                self.wfile.write(b'{"status": "ok"}' if ok else b'{"status": "loading"}')
            elif token and self.headers.get("Authorization") != f"Bearer {token}":
                self.send_response(401)
                self.end_headers()
            else:
                self.send_response(404)
                self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    stage("loading_model", model=args.model)

    def announce() -> None:
        time.sleep(max(0.0, ready_at - time.monotonic()))  # pacing: the simulated model load
        stage("ready", port=args.port)

    threading.Thread(target=announce, daemon=True).start()
    server.serve_forever()
    stage("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
