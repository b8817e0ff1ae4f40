"""The runtime's HTTP handlers: OpenAI endpoints with SSE streaming, models, health, metrics.

Handlers validate and tokenize on the event loop, submit to the engine, and turn the engine's
per-step outputs (delivered through ``dispatch``) into JSON or server-sent events. Every
``/v1`` answer is counted in ``hangar_runtime_requests_total`` by status; a client that goes
away has its sequence cancelled so the slot is freed before the next decode step.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from workers.runtime.metrics import CONTENT_TYPE
from workers.runtime.protocol import (
    RETRY_AFTER_SECONDS,
    ApiError,
    CommonParams,
    new_id,
    now,
    parse_chat,
    parse_completion,
    usage,
)

if TYPE_CHECKING:
    from workers.runtime.server import Runtime

MAX_BODY_BYTES = 1024 * 1024


class Consumer:
    """Receives one sequence's outputs on the event loop."""

    __slots__ = ("queue",)

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()


def dispatch(outputs: list[tuple[Any, Any]]) -> None:
    """Hand one engine step's outputs to their consumers (runs on the event loop)."""
    for consumer, out in outputs:
        consumer.queue.put_nowait(out)


# ---------------------------------------------------------------- request plumbing


async def read_json(request: Request) -> Any:
    """Read the body (at most 1 MiB: 413 beyond) and parse it as JSON (400 if invalid)."""
    too_large = ApiError(f"request body exceeds {MAX_BODY_BYTES} bytes", status=413, code="request_too_large")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as exc:
        raise ApiError(f"request body is not valid JSON: {exc}", code="invalid_json") from exc


def error_response(err: ApiError) -> JSONResponse:
    """Render an ``ApiError`` in OpenAI's shape."""
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def _wait_for_disconnect(request: Request) -> None:
    # The body has been consumed, so the next ASGI message is the disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


Handler = Callable[[Request, "Runtime"], Awaitable[Response]]


def api_endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a ``/v1`` handler: errors become OpenAI JSON, every answer is counted by status."""

    async def endpoint(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        try:
            response = await handler(request, runtime)
        except ApiError as err:
            response = error_response(err)
        # Streaming responses count themselves when the stream ends.
        if not isinstance(response, StreamingResponse):
            runtime.metrics.requests.labels(status=str(response.status_code)).inc()
        return response

    return endpoint


@dataclass
class _Job:
    """A submitted generation plus what is needed to render its answer."""

    runtime: Runtime
    seq: Any
    consumer: Consumer
    params: CommonParams
    kind: str  # "chat" | "text"
    id: str = ""
    created: int = 0
    done: bool = False  # the engine sent the final output
    closed: bool = False

    def close(self, status: str) -> None:
        """Release the request exactly once; cancel its sequence if it did not finish."""
        if self.closed:
            return
        self.closed = True
        if not self.done:
            self.runtime.engine.cancel(self.seq)
        self.runtime.release()
        self.runtime.metrics.requests.labels(status=status).inc()


class _SSEResponse(StreamingResponse):
    """A streaming response that always releases its job, even if its body never started.

    Starlette cancels the body iterator when the client disconnects; if that happens before
    the first iteration, the generator's ``finally`` never runs, so cleanup lives here too.
    """

    def __init__(self, job: _Job) -> None:
        super().__init__(
            _sse(job),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.job = job

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.close("499")  # no-op when the stream completed


async def _submit(
    runtime: Runtime, kind: str, params: CommonParams, prompt_ids: list[int], param: str, arrival: float
) -> _Job:
    from workers.runtime.engine import GenerationRequest, QueueFullError

    max_tokens = runtime.max_tokens_for(params, len(prompt_ids), param)
    request = GenerationRequest(
        prompt_ids=prompt_ids,
        max_tokens=max_tokens,
        sampling=params.sampling,
        stop=params.stop,
        ignore_eos=params.ignore_eos,
        arrival=arrival,
    )
    consumer = Consumer()
    try:
        seq = runtime.engine.submit(request, consumer)
    except QueueFullError as exc:
        raise ApiError(
            f"server is at capacity ({exc}); retry later",
            status=503,
            type="service_unavailable",
            code="queue_full",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        ) from exc
    runtime.acquire()
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    return _Job(runtime, seq, consumer, params, kind, new_id(prefix), now())


async def chat_completions(request: Request, runtime: Runtime) -> Response:
    """``POST /v1/chat/completions``."""
    arrival = time.monotonic()
    body = await read_json(request)
    runtime.require_ready()
    parsed = parse_chat(body, runtime.config.served_model_name)
    prompt_ids = runtime.prompt_ids_for_chat(parsed.messages)
    job = await _submit(runtime, "chat", parsed.params, prompt_ids, "messages", arrival)
    return await _respond(request, job)


async def completions(request: Request, runtime: Runtime) -> Response:
    """``POST /v1/completions``."""
    arrival = time.monotonic()
    body = await read_json(request)
    runtime.require_ready()
    parsed = parse_completion(body, runtime.config.served_model_name)
    prompt_ids = runtime.prompt_ids_for_completion(parsed.prompt)
    job = await _submit(runtime, "text", parsed.params, prompt_ids, "prompt", arrival)
    return await _respond(request, job)


async def _respond(request: Request, job: _Job) -> Response:
    if job.params.stream:
        return _SSEResponse(job)
    return await _collect(request, job)


async def _collect(request: Request, job: _Job) -> Response:
    runtime = job.runtime
    pieces: list[str] = []

    async def gather() -> Any:
        while True:
            out = await job.consumer.queue.get()
            pieces.append(out.text)
            if out.finished:
                return out

    waiter = asyncio.ensure_future(gather())
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not waiter.done():
            # The client went away: free the slot now rather than after max_tokens.
            waiter.cancel()
            runtime.engine.cancel(job.seq)
        runtime.release()
    if not waiter.done() or waiter.cancelled():
        return Response(status_code=499)
    final = waiter.result()
    if final.finish_reason == "error":
        raise ApiError("generation failed: " + str(final.error), status=500, type="server_error", code="internal_error")
    text = "".join(pieces)
    if job.kind == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": final.finish_reason,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": final.finish_reason}
        obj = "text_completion"
    return JSONResponse(
        {
            "id": job.id,
            "object": obj,
            "created": job.created,
            "model": job.params.model,
            "choices": [choice],
            "usage": usage(final.prompt_tokens, final.completion_tokens),
            "system_fingerprint": None,
        }
    )


def _sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


class _ChunkWriter:
    """Builds the SSE events of one stream.

    Text deltas are by far the most frequent event (one per token per stream), so their JSON
    is a precomputed prefix and suffix around the encoded text instead of a full ``dumps``.
    """

    def __init__(self, job: _Job) -> None:
        self.job = job
        self.chat = job.kind == "chat"
        self.object = "chat.completion.chunk" if self.chat else "text_completion"
        probe = "\x00PROBE\x00"
        template = self.encode(probe, None).decode()
        head, tail = template.split(json.dumps(probe), 1)
        self._prefix, self._suffix = head.encode(), tail.encode()

    def encode(self, text: str | None, finish_reason: str | None, *, role: bool = False) -> bytes:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        payload: dict[str, Any] = {
            "id": self.job.id,
            "object": self.object,
            "created": self.job.created,
            "model": self.job.params.model,
            "choices": [choice],
        }
        if self.job.params.include_usage:
            payload["usage"] = None
        return _sse_event(payload)

    def text(self, text: str) -> bytes:
        # json.dumps with ensure_ascii=False matches _sse_event's encoding of the same text.
        return self._prefix + json.dumps(text, ensure_ascii=False).encode() + self._suffix

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return _sse_event(
            {
                "id": self.job.id,
                "object": self.object,
                "created": self.job.created,
                "model": self.job.params.model,
                "choices": [],
                "usage": usage(prompt_tokens, completion_tokens),
            }
        )


async def _sse(job: _Job) -> AsyncIterator[bytes]:
    queue = job.consumer.queue
    writer = _ChunkWriter(job)
    status = "499"
    try:
        if writer.chat:
            yield writer.encode(None, None, role=True)
        while not job.done:
            # Take everything already delivered and send it in one write: when the loop is
            # busy, several tokens per stream pile up and one send is much cheaper than many.
            outs = [await queue.get()]
            while not queue.empty():
                outs.append(queue.get_nowait())
            parts: list[bytes] = []
            for out in outs:
                if out.text:
                    parts.append(writer.text(out.text))
                if not out.finished:
                    continue
                job.done = True
                if out.finish_reason == "error":
                    status = "500"
                    error = ApiError("generation failed: " + str(out.error), status=500, type="server_error")
                    parts.append(_sse_event(error.body()))
                    break
                parts.append(writer.encode(None, out.finish_reason))
                if job.params.include_usage:
                    parts.append(writer.usage(out.prompt_tokens, out.completion_tokens))
                parts.append(b"data: [DONE]\n\n")
                status = "200"
            if parts:
                yield b"".join(parts)
    finally:
        # Runs on normal completion and when Starlette cancels us on client disconnect.
        job.close(status)


async def list_models(request: Request) -> Response:
    """``GET /v1/models``."""
    runtime: Runtime = request.app.state.runtime
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {
                    "id": runtime.config.served_model_name,
                    "object": "model",
                    "created": runtime.created,
                    "owned_by": "hangar",
                    "max_model_len": runtime.max_model_len or None,
                }
            ],
        }
    )


async def health(request: Request) -> Response:
    """``GET /health``: 200 only while serving; see the module docstring."""
    runtime: Runtime = request.app.state.runtime
    if runtime.phase == "ready":
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": runtime.phase}, status_code=503, headers={"Retry-After": RETRY_AFTER_SECONDS})


async def metrics(request: Request) -> Response:
    """``GET /metrics`` in Prometheus text format."""
    runtime: Runtime = request.app.state.runtime
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)
