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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from workers.runtime.choices import (
    ChoiceState,
    chat_logprobs,
    completion_logprobs,
    holds_back,
    parse_tool_calls,
    tool_call_deltas,
)
from workers.runtime.features import OutputFormat, ToolSettings
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
    """Receives one sequence's outputs on the event loop, tagged with its choice index."""

    __slots__ = ("index", "queue")

    def __init__(self, queue: asyncio.Queue[Any] | None = None, index: int = 0) -> None:
        self.queue: asyncio.Queue[Any] = queue if queue is not None else asyncio.Queue()
        self.index = index


def dispatch(outputs: list[tuple[Any, Any]]) -> None:
    """Hand one engine step's outputs to their consumers (runs on the event loop)."""
    for consumer, out in outputs:
        consumer.queue.put_nowait((consumer.index, out))


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
    """A submitted generation (``n`` sequences) plus what is needed to render its answer."""

    runtime: Runtime
    seqs: list[Any]
    queue: asyncio.Queue[Any]
    params: CommonParams
    kind: str  # "chat" | "text"
    id: str = ""
    created: int = 0
    output: OutputFormat = field(default_factory=OutputFormat)
    tools: ToolSettings = field(default_factory=ToolSettings)
    done: bool = False  # the engine sent the final output of every choice
    closed: bool = False
    finished: set[int] = field(default_factory=set)

    def close(self, status: str) -> None:
        """Release the request exactly once; cancel its sequences that did not finish."""
        if self.closed:
            return
        self.closed = True
        self.cancel()
        self.runtime.release()
        self.runtime.metrics.requests.labels(status=status).inc()

    def cancel(self) -> None:
        for i, seq in enumerate(self.seqs):
            if i not in self.finished:
                self.runtime.engine.cancel(seq)

    def mark(self, index: int, out: Any) -> None:
        if out.finished:
            self.finished.add(index)
            self.done = len(self.finished) == len(self.seqs)

    def decode(self, token: int) -> str:
        return self.runtime.decode_token(token)


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
    runtime: Runtime,
    kind: str,
    params: CommonParams,
    prompt_ids: list[int],
    param: str,
    arrival: float,
    output: OutputFormat | None = None,
    tools: ToolSettings | None = None,
) -> _Job:
    from workers.runtime.engine import GenerationRequest, QueueFullError

    output = output or OutputFormat()
    max_tokens = runtime.max_tokens_for(params, len(prompt_ids), param)
    runtime.check_vocabulary(params)
    constraints = [await runtime.constraint_for(output) for _ in range(params.n)]
    requests = [
        GenerationRequest(
            prompt_ids=prompt_ids,
            max_tokens=max_tokens,
            sampling=params.sampling,
            stop=params.stop,
            ignore_eos=params.ignore_eos,
            arrival=arrival,
            min_tokens=params.min_tokens,
            logprobs=params.logprobs,
            constraint=constraint,
        )
        for constraint in constraints
    ]
    queue: asyncio.Queue[Any] = asyncio.Queue()
    try:
        seqs = runtime.engine.submit_many(requests, [Consumer(queue, i) for i in range(params.n)])
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
    return _Job(runtime, seqs, queue, params, kind, new_id(prefix), now(), output, tools or ToolSettings())


async def chat_completions(request: Request, runtime: Runtime) -> Response:
    """``POST /v1/chat/completions``."""
    arrival = time.monotonic()
    body = await read_json(request)
    runtime.require_ready()
    parsed = parse_chat(body, runtime.config.served_model_name)
    prompt_ids = runtime.prompt_ids_for_chat(parsed.messages, parsed.tools)
    job = await _submit(runtime, "chat", parsed.params, prompt_ids, "messages", arrival, parsed.output, parsed.tools)
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
    states = [ChoiceState(i) for i in range(len(job.seqs))]

    async def gather() -> None:
        while not job.done:
            index, out = await job.queue.get()
            _absorb(states[index], out)
            job.mark(index, out)

    waiter = asyncio.ensure_future(gather())
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not waiter.done():
            # The client went away: free the slots now rather than after max_tokens.
            waiter.cancel()
            job.cancel()
        runtime.release()
    if not waiter.done() or waiter.cancelled():
        return Response(status_code=499)
    failed = next((s for s in states if s.finish_reason == "error"), None)
    if failed is not None:
        raise ApiError(
            "generation failed: " + str(failed.error), status=500, type="server_error", code="internal_error"
        )
    chat = job.kind == "chat"
    return JSONResponse(
        {
            "id": job.id,
            "object": "chat.completion" if chat else "text_completion",
            "created": job.created,
            "model": job.params.model,
            "choices": [_chat_choice(job, s) if chat else _text_choice(job, s) for s in states],
            "usage": usage(states[0].prompt_tokens, sum(s.completion_tokens for s in states)),
            "system_fingerprint": None,
        }
    )


def _absorb(state: ChoiceState, out: Any) -> None:
    state.pieces.append(out.text)
    if out.logprobs:
        state.logprobs.extend(out.logprobs)
    if out.finished:
        state.finish_reason = out.finish_reason
        state.prompt_tokens, state.completion_tokens = out.prompt_tokens, out.completion_tokens
        state.error = out.error


def _chat_choice(job: _Job, state: ChoiceState) -> dict[str, Any]:
    text = state.text
    message: dict[str, Any] = {"role": "assistant", "content": text}
    finish = state.finish_reason
    calls = parse_tool_calls(text, job.output, job.tools) if finish != "length" else None
    if calls:
        message = {"role": "assistant", "content": None, "tool_calls": calls}
        finish = "tool_calls"
    logprobs = chat_logprobs(state.logprobs, job.decode) if job.params.logprobs is not None else None
    return {"index": state.index, "message": message, "logprobs": logprobs, "finish_reason": finish}


def _text_choice(job: _Job, state: ChoiceState) -> dict[str, Any]:
    logprobs = completion_logprobs(state.logprobs, job.decode) if job.params.logprobs is not None else None
    return {"index": state.index, "text": state.text, "logprobs": logprobs, "finish_reason": state.finish_reason}


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
        self._templates: dict[int, tuple[bytes, bytes]] = {}

    def encode(
        self,
        text: str | None,
        finish_reason: str | None,
        *,
        role: bool = False,
        index: int = 0,
        extra: dict[str, Any] | None = None,
        logprobs: Any = None,
    ) -> bytes:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                delta["content"] = text
            delta.update(extra or {})
            choice: dict[str, Any] = {
                "index": index,
                "delta": delta,
                "logprobs": logprobs,
                "finish_reason": finish_reason,
            }
        else:
            choice = {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish_reason}
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

    def text(self, text: str, index: int = 0) -> bytes:
        template = self._templates.get(index)
        if template is None:
            probe = "\x00PROBE\x00"
            head, tail = self.encode(probe, None, index=index).decode().split(json.dumps(probe), 1)
            template = self._templates[index] = (head.encode(), tail.encode())
        # json.dumps with ensure_ascii=False matches _sse_event's encoding of the same text.
        return template[0] + json.dumps(text, ensure_ascii=False).encode() + template[1]

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


class _StreamState:
    """Per-choice stream bookkeeping: text held back while it may still be a tool call."""

    def __init__(self, job: _Job, writer: _ChunkWriter) -> None:
        self.job, self.writer = job, writer
        self.states = [ChoiceState(i) for i in range(len(job.seqs))]
        self.sent = [0] * len(job.seqs)  # characters of each choice's text already sent

    def step(self, index: int, out: Any) -> list[bytes]:
        job, writer, state = self.job, self.writer, self.states[index]
        _absorb(state, out)
        job.mark(index, out)
        parts: list[bytes] = []
        text = state.text
        if job.params.logprobs is not None and out.logprobs:
            render = chat_logprobs if writer.chat else completion_logprobs
            parts.append(writer.encode(None, None, index=index, logprobs=render(out.logprobs, job.decode)))
        if not (writer.chat and holds_back(text, job.output, job.tools)) and len(text) > self.sent[index]:
            parts.append(writer.text(text[self.sent[index] :], index))
            self.sent[index] = len(text)
        if out.finished and out.finish_reason != "error":
            parts.extend(self._finish(state))
        return parts

    def _finish(self, state: ChoiceState) -> list[bytes]:
        job, writer = self.job, self.writer
        finish = state.finish_reason
        text = state.text
        calls = parse_tool_calls(text, job.output, job.tools) if writer.chat and finish != "length" else None
        parts = []
        if calls:
            parts.append(writer.encode(None, None, index=state.index, extra={"tool_calls": tool_call_deltas(calls)}))
            finish = "tool_calls"
        elif len(text) > self.sent[state.index]:  # held back, and not a tool call after all
            parts.append(writer.text(text[self.sent[state.index] :], state.index))
        self.sent[state.index] = len(text)
        parts.append(writer.encode(None, finish, index=state.index))
        return parts


async def _sse(job: _Job) -> AsyncIterator[bytes]:
    queue = job.queue
    writer = _ChunkWriter(job)
    stream = _StreamState(job, writer)
    status = "499"
    try:
        if writer.chat:
            yield b"".join(writer.encode(None, None, role=True, index=i) for i in range(len(job.seqs)))
        while not job.done:
            # Take everything already delivered and send it in one write: when the loop is
            # busy, several tokens per stream pile up and one send is much cheaper than many.
            outs = [await queue.get()]
            while not queue.empty():
                outs.append(queue.get_nowait())
            parts: list[bytes] = []
            for index, out in outs:
                parts.extend(stream.step(index, out))
                if out.finished and out.finish_reason == "error":
                    status = "500"
                    job.done = True
                    error = ApiError("generation failed: " + str(out.error), status=500, type="server_error")
                    parts.append(_sse_event(error.body()))
                    break
            if job.done and status != "500":
                if job.params.include_usage:
                    states = stream.states
                    parts.append(writer.usage(states[0].prompt_tokens, sum(s.completion_tokens for s in states)))
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
