"""The gateway answers with a request id and sends the same id to the model replica."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.controlplane.gateway.conftest import auth

ANSWER = {
    "id": "cmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


class RecordingReplica:
    """A replica that answers every completion and keeps the headers it was sent."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        seen = self.headers

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen.append({k.lower(): v for k, v in self.headers.items()})
                body = json.dumps(ANSWER).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def replica() -> Iterator[RecordingReplica]:
    server = RecordingReplica()
    yield server
    server.server.shutdown()
    server.server.server_close()


def chat(gateway: Any, token: str, model: str, **headers: str | bytes) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers={**auth(token), **headers})


def test_the_clients_request_id_reaches_the_replica(gateway, replica, make_key, serve_model) -> None:
    key, token = make_key()
    serve_model(key.tenant, "rid-model", replica.url)
    response = chat(gateway, token, "rid-model", **{"X-Request-ID": "client-42.a_b"})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "client-42.a_b"
    [sent] = replica.headers
    assert sent["x-request-id"] == "client-42.a_b"
    assert token not in json.dumps(sent)  # the client's key still stays at the gateway


@pytest.mark.parametrize("offered", [None, b"x" * 65, b"a b", "évil".encode(), b"<script>", b"id\tx"])
def test_a_missing_or_unsafe_request_id_is_replaced(gateway, replica, make_key, serve_model, offered) -> None:
    key, token = make_key()
    serve_model(key.tenant, "rid-model", replica.url)
    response = chat(gateway, token, "rid-model", **({"X-Request-ID": offered} if offered is not None else {}))
    assert response.status_code == 200, response.text
    generated = response.headers["x-request-id"]
    assert generated.encode() != offered and len(generated) == 32 and generated.isalnum()
    assert replica.headers[-1]["x-request-id"] == generated


def test_errors_carry_a_request_id_too(gateway) -> None:
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json={}, headers={"X-Request-ID": "no-key-1"})
    assert response.status_code == 401
    assert response.headers["x-request-id"] == "no-key-1"
