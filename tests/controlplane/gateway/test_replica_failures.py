"""A replica that fails the gateway: retried once before the first byte, a 502 when cut mid-answer,
an error event (raised by the openai client) when cut mid-stream (issue 13 item 1)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from tests.controlplane.gateway.conftest import auth, metric_value

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
CHUNK = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'


class Upstream:
    """A replica that answers every request with ``reply`` (raw bytes), then hangs up."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests += 1
                conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def upstream() -> Iterator[Callable[[bytes], Upstream]]:
    made: list[Upstream] = []

    def make(reply: bytes) -> Upstream:
        server = Upstream(reply)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def test_a_draining_replica_passes_the_request_to_another(gateway, stub_upstream, make_key, serve_model, upstream):
    refusal = b'{"error": {"message": "server is shutting down"}}'
    draining = upstream(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        + f"Connection: close\r\nContent-Length: {len(refusal)}\r\n\r\n".encode()
        + refusal
    )
    key, token = make_key()
    serve_model(key.tenant, "m", draining.url, stub_upstream.url)
    before = metric_value(gateway.url, 'hangar_gateway_retries_total{kind="refused"}') or 0.0
    answers = [
        httpx.post(f"{gateway.url}/v1/chat/completions", json=BODY, headers=auth(token), timeout=30) for _ in range(6)
    ]
    assert [a.status_code for a in answers] == [200] * 6
    assert draining.requests >= 1  # it was asked, refused, and the request went to the other replica
    assert (metric_value(gateway.url, 'hangar_gateway_retries_total{kind="refused"}') or 0.0) >= before + 1


def test_a_replica_cut_mid_answer_is_a_502_in_openai_shape(gateway, make_key, serve_model, upstream):
    cut = upstream(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n" + b'{"id": "cmpl-'
    )
    key, token = make_key()
    serve_model(key.tenant, "m", cut.url)
    answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=BODY, headers=auth(token), timeout=30)
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "upstream_error" and error["message"]


def test_a_stream_cut_mid_answer_ends_in_an_error_the_client_raises(gateway, make_key, serve_model, upstream):
    cut = upstream(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(CHUNK):x}\r\n".encode()
        + CHUNK
        + b"\r\n"
    )
    key, token = make_key()
    serve_model(key.tenant, "m", cut.url)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0)
    received = []
    with pytest.raises(openai.APIError, match="mid-answer"):
        for chunk in client.chat.completions.create(**BODY, stream=True):
            received.append(chunk)
    assert [c.choices[0].delta.content for c in received] == ["hi"]  # what came, then the error
