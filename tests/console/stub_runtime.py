"""A stand-in for ``workers.runtime`` that the local driver can start as a replica in tests that
exercise the control plane, not the model (``HANGAR_LOCAL_RUNTIME_MODULE=tests.console.stub_runtime``).

It takes the runtime's arguments and answers what the control plane asks of a replica:
``/health`` (200: ready), ``/metrics`` (the runtime's metric names, counters that grow) and
``/v1/models``. It starts in a fraction of a second and needs no model weights in memory, so a
test can start and stop dozens of replicas on a small machine.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_lock = threading.Lock()
_scrapes = 0


def metrics_text() -> str:
    global _scrapes
    with _lock:
        _scrapes += 1
        count = _scrapes
    return (
        "# TYPE hangar_runtime_requests_total counter\n"
        f'hangar_runtime_requests_total{{status="200"}} {count}\n'
        "# TYPE hangar_runtime_prompt_tokens_total counter\n"
        f"hangar_runtime_prompt_tokens_total {count * 5}\n"
        "# TYPE hangar_runtime_completion_tokens_total counter\n"
        f"hangar_runtime_completion_tokens_total {count * 8}\n"
        "# TYPE hangar_runtime_requests_in_flight gauge\n"
        "hangar_runtime_requests_in_flight 0\n"
    )


def handler_for(served_model_name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, "application/json", json.dumps({"status": "ok"}))
            elif self.path == "/metrics":
                self._send(200, "text/plain; version=0.0.4", metrics_text())
            elif self.path == "/v1/models":
                body = {"object": "list", "data": [{"id": served_model_name, "object": "model"}]}
                self._send(200, "application/json", json.dumps(body))
            else:
                self._send(404, "application/json", json.dumps({"error": "not found"}))

        def _send(self, status: int, content_type: str, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name", default="stub")
    args, _ = parser.parse_known_args()  # the runtime's other options do not matter here
    server = ThreadingHTTPServer((args.host, args.port), handler_for(args.served_model_name))
    print(f"stub runtime serving {args.served_model_name} on {args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
