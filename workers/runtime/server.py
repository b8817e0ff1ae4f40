"""HTTP front of the runtime: OpenAI-compatible endpoints, health, metrics, graceful drain.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions`` (both with SSE streaming),
``GET /v1/models``, ``GET /health``, ``GET /metrics``.

Threads: the asyncio event loop serves HTTP; one model thread loads the model, warms it up and
then runs ``Engine.run``. The HTTP server starts first so that ``/health`` can answer 503
while the model loads.

Health semantics (what orchestrators and the control plane rely on):

* 503 ``{"status": "loading"}`` / ``{"status": "warming_up"}`` until the model is loaded and
  one warm-up generation has run;
* 200 ``{"status": "ok"}`` while serving;
* 503 ``{"status": "draining"}`` after SIGTERM/SIGINT. New API requests get 503 too; requests
  in flight finish; then the process exits 0. A second signal exits at once.

Progress goes to stderr as one greppable line per phase, e.g.
``hangar-runtime: stage=loading_model model=/model dtype=float32``. Stages, in order:
``starting``, ``loading_model``, ``loaded``, ``warming_up``, ``ready``, then ``draining``,
``drained`` (or ``drain_timeout``) and ``stopped``; ``failed`` (exit code 1) when the model
cannot be served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from workers.runtime.loader import LoadedModel, LoadOptions, ModelLoadError, load_model
from workers.runtime.metrics import CONTENT_TYPE, RuntimeMetrics
from workers.runtime.protocol import (
    ApiError,
    CommonParams,
    new_id,
    now,
    parse_chat,
    parse_completion,
    usage,
)

MAX_BODY_BYTES = 1024 * 1024
RETRY_AFTER_SECONDS = "1"


def stage(name: str, **fields: object) -> None:
    """Print one progress line for the control plane: ``hangar-runtime: stage=NAME k=v ...``."""
    parts = [f"stage={name}"]
    for key, value in fields.items():
        text = str(value)
        if not text or any(c.isspace() or c in '"=' for c in text):
            text = json.dumps(text)
        parts.append(f"{key}={text}")
    print("hangar-runtime: " + " ".join(parts), file=sys.stderr, flush=True)


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota.

    torch sizes its thread pool from the affinity mask only, so in a container limited to
    2 CPUs on a 64-core node it would start 64 threads and thrash.
    """
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def default_threads(device: str) -> int | None:
    """torch threads for CPU inference: all available CPUs but one, kept for the HTTP loop.

    Measured on 2 cores with 32 concurrent streams: 1 torch thread gives ~3,400 tok/s, 2 give
    ~2,800, because the event loop and the operating system steal cycles from one OpenMP
    worker and the other waits for it at every barrier. None on CUDA (torch's default).
    """
    if device != "cpu":
        return None
    return max(1, available_cpus() - 1)


@dataclass
class ServerConfig:
    """Everything ``python -m workers.runtime`` accepts."""

    model_dir: Path
    served_model_name: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 32
    max_model_len: int | None = None
    max_queue: int = 256
    drain_timeout: float = 120.0
    threads: int | None = None
    load: LoadOptions = field(default_factory=LoadOptions)


class _Consumer:
    """Receives one sequence's outputs on the event loop."""

    __slots__ = ("queue",)

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()


class Runtime:
    """Application state shared by the handlers, the model thread and the signal handler."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = RuntimeMetrics(cuda=config.load.device.startswith("cuda"))
        self.metrics.max_batch_size.set(config.max_batch_size)
        self.phase = "loading"
        self.exit_code = 0
        self.engine: Any = None
        self.loaded: LoadedModel | None = None
        self.max_model_len = 0
        self.created = now()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: uvicorn.Server | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self._idle: asyncio.Event | None = None
        self._drain_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        """Lifespan start: remember the loop and start loading on the model thread."""
        self.loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._model_main, name="hangar-model", daemon=True)
        self._thread.start()

    async def shutdown(self) -> None:
        """Lifespan end: stop the scheduler loop."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10.0)
        stage("stopped", exit_code=self.exit_code)

    def _model_main(self) -> None:
        cfg = self.config
        try:
            started = time.monotonic()
            stage(
                "loading_model",
                model=cfg.model_dir,
                dtype=cfg.load.dtype,
                quantization=cfg.load.quantization,
                device=cfg.load.device,
                threads=cfg.threads or default_threads(cfg.load.device) or "default",
            )
            threads = cfg.threads or default_threads(cfg.load.device)
            if threads:
                import torch

                torch.set_num_threads(threads)
            loaded = load_model(cfg.model_dir, cfg.load)
            max_len = loaded.max_model_len
            if cfg.max_model_len is not None:
                if cfg.max_model_len > max_len:
                    raise ModelLoadError(f"--max-model-len {cfg.max_model_len} exceeds the model's limit of {max_len}")
                max_len = cfg.max_model_len
            self.metrics.model_weights.set(loaded.weights_bytes)
            stage(
                "loaded",
                parameters=loaded.num_parameters,
                weights_bytes=loaded.weights_bytes,
                max_model_len=max_len,
                seconds=f"{time.monotonic() - started:.2f}",
            )
            if self._stop.is_set():  # shut down while loading: skip the warm-up
                return
            self._set_phase("warming_up")
            stage("warming_up")
            engine = self._make_engine(loaded)
            engine.warmup()
        except Exception as exc:
            # ModelLoadError messages are written for operators; anything else gets its type.
            stage("failed", error=str(exc) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}")
            self._call_in_loop(self._fail)
            return
        self.loaded, self.max_model_len = loaded, max_len
        self._call_in_loop(self._ready, engine, time.monotonic() - started)
        engine.run(self._stop)

    def _make_engine(self, loaded: LoadedModel) -> Any:
        from workers.runtime.engine import Engine

        def deliver(outputs: list[tuple[Any, Any]]) -> None:
            self._call_in_loop(_dispatch, outputs)

        return Engine(
            loaded.model,
            loaded.tokenizer,
            max_batch_size=self.config.max_batch_size,
            max_queue=self.config.max_queue,
            eos_token_ids=loaded.eos_token_ids,
            metrics=self.metrics,
            deliver=deliver,
        )

    def _call_in_loop(self, fn: Callable[..., object], *args: object) -> None:
        assert self.loop is not None
        with contextlib.suppress(RuntimeError):  # loop already closed at exit
            self.loop.call_soon_threadsafe(fn, *args)

    def _set_phase(self, phase: str) -> None:
        self._call_in_loop(self._advance, phase)

    def _advance(self, phase: str) -> None:
        # A drain that started while loading must not be undone by the loader's progress.
        if self.phase not in ("draining", "failed"):
            self.phase = phase

    def _ready(self, engine: Any, seconds: float) -> None:
        self.engine = engine
        if self.phase == "draining":
            return
        self.phase = "ready"
        self.metrics.ready.set(1)
        stage(
            "ready",
            model=self.config.served_model_name,
            host=self.config.host,
            port=self.config.port,
            seconds=f"{seconds:.2f}",
        )

    def _fail(self) -> None:
        self.phase = "failed"
        self.exit_code = 1
        if self.server is not None:
            self.server.should_exit = True

    def begin_drain(self) -> None:
        """First SIGTERM/SIGINT: stop taking work, let in-flight requests finish, then exit."""
        if self.phase in ("draining", "failed"):
            return
        self.phase = "draining"
        self.metrics.ready.set(0)
        stage("draining", in_flight=self._in_flight)
        # Keep a reference: the loop only holds tasks weakly.
        self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        assert self._idle is not None
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=self.config.drain_timeout)
            stage("drained")
        except TimeoutError:
            stage("drain_timeout", in_flight=self._in_flight)
        if self.server is not None:
            self.server.should_exit = True

    # ------------------------------------------------------------ in-flight accounting

    def acquire(self) -> None:
        """Count a generation request as in flight."""
        assert self._idle is not None
        self._in_flight += 1
        self.metrics.in_flight.set(self._in_flight)
        self._idle.clear()

    def release(self) -> None:
        """Undo ``acquire``; wakes the drain when the last request leaves."""
        assert self._idle is not None
        self._in_flight -= 1
        self.metrics.in_flight.set(self._in_flight)
        if self._in_flight == 0:
            self._idle.set()

    # ------------------------------------------------------------ helpers for handlers

    def require_ready(self) -> None:
        """Refuse API work unless serving (503, so that gateways retry elsewhere)."""
        if self.phase != "ready":
            message = {
                "draining": "server is shutting down",
                "failed": "model failed to load",
            }.get(self.phase, "model is still loading")
            raise ApiError(
                message,
                status=503,
                type="service_unavailable",
                code=self.phase,
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )

    def prompt_ids_for_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Render the tokenizer's chat template and tokenize the result."""
        assert self.loaded is not None
        tok = self.loaded.tokenizer
        if not getattr(tok, "chat_template", None):
            raise ApiError("this model has no chat template; use /v1/completions", param="messages")
        try:
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:
            raise ApiError(f"chat template rejected the messages: {exc}", param="messages") from exc
        return list(tok.encode(text, add_special_tokens=False))

    def prompt_ids_for_completion(self, prompt: str | list[int]) -> list[int]:
        """Tokenize a text prompt (or check token ids against the vocabulary)."""
        assert self.loaded is not None
        tok = self.loaded.tokenizer
        if isinstance(prompt, str):
            return list(tok.encode(prompt))
        vocab = len(tok)
        if any(t < 0 or t >= vocab for t in prompt):
            raise ApiError(f"token ids must be in [0, {vocab})", param="prompt")
        return prompt

    def max_tokens_for(self, params: CommonParams, prompt_len: int, param: str) -> int:
        """Apply the context limit: 400 if the prompt (plus max_tokens) does not fit."""
        room = self.max_model_len - prompt_len
        if room <= 0:
            raise ApiError(
                f"This model's maximum context length is {self.max_model_len} tokens; "
                f"your prompt has {prompt_len} tokens",
                param=param,
                code="context_length_exceeded",
            )
        if params.max_tokens is None:
            return room
        if params.max_tokens > room:
            raise ApiError(
                f"This model's maximum context length is {self.max_model_len} tokens; you requested "
                f"{prompt_len + params.max_tokens} tokens ({prompt_len} in the prompt, "
                f"{params.max_tokens} for the completion)",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return params.max_tokens


def _dispatch(outputs: list[tuple[Any, Any]]) -> None:
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


Handler = Callable[[Request, Runtime], Awaitable[Response]]


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
    consumer: _Consumer
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
    consumer = _Consumer()
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


def create_app(runtime: Runtime) -> Starlette:
    """The ASGI application; ``runtime`` carries the state."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.startup()
        try:
            yield
        finally:
            await runtime.shutdown()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", api_endpoint(chat_completions), methods=["POST"]),
            Route("/v1/completions", api_endpoint(completions), methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app


class _DrainingServer(uvicorn.Server):
    """uvicorn, except that the first SIGTERM/SIGINT drains instead of closing the socket."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        rt = self.runtime
        if rt.loop is None or rt.phase in ("draining", "failed"):
            super().handle_exit(sig, frame)  # second signal, or nothing to drain: exit now
            return
        # Signal handlers run between bytecodes of the loop thread; hop onto the loop properly.
        rt.loop.call_soon_threadsafe(rt.begin_drain)


def serve(config: ServerConfig) -> int:
    """Run the server until drained; return the process exit code."""
    stage(
        "starting",
        model=config.model_dir,
        served_model_name=config.served_model_name,
        host=config.host,
        port=config.port,
    )
    runtime = Runtime(config)
    app = create_app(runtime)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = _DrainingServer(uv_config, runtime)
    runtime.server = server
    server.run()
    if not server.started and runtime.exit_code == 0:
        return 1  # could not bind the port; uvicorn has logged why
    return runtime.exit_code
