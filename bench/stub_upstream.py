"""A fixed-latency upstream that speaks OpenAI's protocol, for gateway tests and benchmarks.

``python bench/stub_upstream.py --port N [--latency-ms 5] [--model NAME] [--tokens 16]``

Written on raw asyncio + httptools (+ uvloop when present) so that it costs as little CPU as
possible next to the gateway and the load generator. It answers ``POST /v1/chat/completions``
and ``/v1/completions`` (JSON or SSE when ``"stream": true``, with a usage chunk when
``stream_options.include_usage``), ``GET /v1/models`` and ``GET /health``. Every answer
carries exactly ``--tokens`` completion tokens and a prompt count of ``len(body) // 8``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httptools

ARGS = argparse.Namespace(latency_ms=0.0, model="stub", tokens=16, chunk_delay_ms=0.0)


def _usage(prompt: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": ARGS.tokens, "total_tokens": prompt + ARGS.tokens}


def _completion(chat: bool, prompt: int) -> bytes:
    choice = (
        {"index": 0, "message": {"role": "assistant", "content": "x" * ARGS.tokens}, "finish_reason": "length"}
        if chat
        else {"index": 0, "text": "x" * ARGS.tokens, "finish_reason": "length", "logprobs": None}
    )
    return json.dumps(
        {
            "id": "cmpl-stub",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": ARGS.model,
            "choices": [choice],
            "usage": _usage(prompt),
        },
        separators=(",", ":"),
    ).encode()


def _events(chat: bool, prompt: int, include_usage: bool) -> list[bytes]:
    obj = "chat.completion.chunk" if chat else "text_completion"
    events = []
    for i in range(ARGS.tokens):
        finish = "length" if i == ARGS.tokens - 1 else None
        choice = (
            {"index": 0, "delta": {"content": "x"}, "finish_reason": finish}
            if chat
            else {"index": 0, "text": "x", "finish_reason": finish}
        )
        payload: dict = {"id": "cmpl-stub", "object": obj, "created": 0, "model": ARGS.model, "choices": [choice]}
        if include_usage:
            payload["usage"] = None
        events.append(b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")
    if include_usage:
        payload = {"id": "cmpl-stub", "object": obj, "created": 0, "model": ARGS.model, "choices": []}
        payload["usage"] = _usage(prompt)
        events.append(b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


class Stub(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        body = b"".join(self.body)
        keep_alive = self.parser.should_keep_alive()
        asyncio.get_running_loop().create_task(self.answer(method, self.url, body, keep_alive))

    def write(self, status: str, content_type: bytes, data: bytes, keep_alive: bool) -> None:
        assert self.transport is not None
        if self.transport.is_closing():  # the client left while we "generated"
            return
        head = (
            f"HTTP/1.1 {status}\r\ncontent-type: ".encode()
            + content_type
            + f"\r\ncontent-length: {len(data)}\r\n".encode()
            + (b"\r\n" if keep_alive else b"connection: close\r\n\r\n")
        )
        self.transport.write(head + data)
        if not keep_alive:
            self.transport.close()

    async def answer(self, method: bytes, url: bytes, body: bytes, keep_alive: bool) -> None:
        assert self.transport is not None
        fixed = _fixed_answer(method, url)
        if fixed is not None:
            self.write(*fixed, keep_alive)
            return
        chat = url == b"/v1/chat/completions"
        try:
            request = json.loads(body)
        except ValueError:
            self.write("400 Bad Request", b"application/json", b'{"error":{"message":"bad json"}}', keep_alive)
            return
        prompt = max(1, len(body) // 8)
        if ARGS.latency_ms:
            await asyncio.sleep(ARGS.latency_ms / 1000)
        if not request.get("stream"):
            self.write("200 OK", b"application/json", _completion(chat, prompt), keep_alive)
            return
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        await self.stream(chat, prompt, include_usage, keep_alive)

    async def stream(self, chat: bool, prompt: int, include_usage: bool, keep_alive: bool) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            + (b"\r\n" if keep_alive else b"connection: close\r\n\r\n")
        )
        for event in _events(chat, prompt, include_usage):
            if self.transport.is_closing():
                return
            self.transport.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            if ARGS.chunk_delay_ms:
                await asyncio.sleep(ARGS.chunk_delay_ms / 1000)
        self.transport.write(b"0\r\n\r\n")
        if not keep_alive:
            self.transport.close()


def _fixed_answer(method: bytes, url: bytes) -> tuple[str, bytes, bytes] | None:
    """(status, content type, body) of the requests answered without a completion, else None."""
    if method == b"GET" and url == b"/health":
        return "200 OK", b"application/json", b'{"status":"ok"}'
    if method == b"GET" and url == b"/v1/models":
        data = json.dumps({"object": "list", "data": [{"id": ARGS.model, "object": "model"}]}).encode()
        return "200 OK", b"application/json", data
    if method != b"POST" or url not in (b"/v1/chat/completions", b"/v1/completions"):
        return "404 Not Found", b"application/json", b'{"error":{"message":"not found"}}'
    return None


async def serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Stub, host, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--model", default="stub")
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args()
    ARGS.__dict__.update(vars(args))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
