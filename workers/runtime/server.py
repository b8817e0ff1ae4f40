"""The runtime process: lifecycle, model thread, graceful drain, and the ASGI app.

Endpoints (handlers in ``api``): ``POST /v1/chat/completions``, ``POST /v1/completions`` (both
with SSE streaming), ``GET /v1/models``, ``GET /health``, ``GET /metrics``; a replica started
with ``--task embed`` serves ``POST /v1/embeddings`` instead of the completions (``embeddings``). With a token
configured, all but ``/health`` require ``Authorization: Bearer <token>`` (see ``auth``).

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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from workers.runtime.api import api_endpoint, chat_completions, completions, dispatch, health, list_models, metrics
from workers.runtime.auth import BearerAuth
from workers.runtime.embeddings import embedding_engine, embeddings, refuse_task
from workers.runtime.faults import FaultInjector, Faults
from workers.runtime.features import OutputFormat, ToolSettings
from workers.runtime.loader import LoadedModel, LoadOptions, ModelLoadError, load_model
from workers.runtime.metrics import RuntimeMetrics
from workers.runtime.protocol import RETRY_AFTER_SECONDS, ApiError, CommonParams, now


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
    prefix_cache_mb: int = 256  # 0 disables prefix caching
    max_kv_tokens: int | None = None  # batched cache bound in token slots; None: unbounded
    prefill_tokens: int = 4096  # padded prompt tokens per prefill pass (engine.PREFILL_TOKEN_BUDGET)
    prefill_chunk: int = 256  # longer prompts are prefilled in chunks of this size (engine.PREFILL_CHUNK)
    drain_timeout: float = 120.0
    threads: int | None = None
    load: LoadOptions = field(default_factory=LoadOptions)
    pooling: str | None = None  # embedding models: None = what the model directory declares
    token: str | None = field(default=None, repr=False)  # None: open to anyone (hand-run only)
    faults: Faults = field(default_factory=Faults)  # tests only (workers.runtime.faults)


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
        self._grammars: Any = None  # constraints.GrammarFactory, built on first use

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
        from workers.runtime.prefix_cache import PrefixCache

        def deliver(outputs: list[tuple[Any, Any]]) -> None:
            self._call_in_loop(dispatch, outputs)

        if self.config.load.task == "embed":
            return embedding_engine(self.config, loaded, self.metrics, deliver)

        return Engine(
            loaded.model,
            loaded.tokenizer,
            max_batch_size=self.config.max_batch_size,
            max_queue=self.config.max_queue,
            eos_token_ids=loaded.eos_token_ids,
            metrics=self.metrics,
            deliver=deliver,
            max_kv_tokens=self.config.max_kv_tokens,
            prefill_tokens=self.config.prefill_tokens,
            prefill_chunk=self.config.prefill_chunk,
            prefix_cache=PrefixCache(self.config.prefix_cache_mb * 1024 * 1024)
            if self.config.prefix_cache_mb
            else None,
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

    def prompt_ids_for_chat(self, messages: list[dict[str, Any]], tools: ToolSettings | None = None) -> list[int]:
        """Render the tokenizer's chat template (with the tools, if any) and tokenize the result."""
        assert self.loaded is not None
        tok = self.loaded.tokenizer
        if not getattr(tok, "chat_template", None):
            raise ApiError("this model has no chat template; use /v1/completions", param="messages")
        rendered_tools = None
        if tools is not None and tools.active:
            rendered_tools = [
                {"type": "function", "function": {"name": t.name, "parameters": t.parameters}} for t in tools.tools
            ]
        try:
            text = tok.apply_chat_template(messages, tools=rendered_tools, tokenize=False, add_generation_prompt=True)
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

    def decode_token(self, token: int) -> str:
        """One token's text, for log probabilities."""
        assert self.loaded is not None
        return str(self.loaded.tokenizer.decode([token], skip_special_tokens=False))

    def check_vocabulary(self, params: CommonParams) -> None:
        """``logit_bias`` may only name tokens of this model's vocabulary."""
        vocab = int(self.loaded.model.config.vocab_size) if self.loaded is not None else 0
        bad = [token for token, _ in params.sampling.logit_bias if token >= vocab]
        if bad:
            raise ApiError(f"logit_bias names token {bad[0]}, outside the vocabulary [0, {vocab})", param="logit_bias")

    async def constraint_for(self, output: OutputFormat) -> Any:
        """A fresh grammar state for one choice (None for free text); 400 for unusable schemas."""
        if output.kind == "text":
            return None
        from workers.runtime.constraints import GrammarFactory, SchemaError

        assert self.loaded is not None
        if self._grammars is None:
            loaded = self.loaded
            self._grammars = await asyncio.to_thread(
                GrammarFactory, loaded.tokenizer, int(loaded.model.config.vocab_size), sorted(loaded.eos_token_ids)
            )
        grammars = self._grammars
        try:
            if output.kind == "json_object":
                return await asyncio.to_thread(grammars.json_object)
            assert output.schema is not None
            return await asyncio.to_thread(grammars.json_schema, output.schema, strict=output.strict)
        except SchemaError as exc:
            param = "tools" if output.kind.startswith("tool") else "response_format"
            raise ApiError(str(exc), param=param, code="invalid_schema") from exc

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


def create_app(runtime: Runtime) -> Starlette:
    """The ASGI application; ``runtime`` carries the state."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.startup()
        try:
            yield
        finally:
            await runtime.shutdown()

    generate = runtime.config.load.task == "generate"
    refuse = refuse_task(runtime.config.load.task)
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", api_endpoint(chat_completions if generate else refuse), methods=["POST"]),
            Route("/v1/completions", api_endpoint(completions if generate else refuse), methods=["POST"]),
            Route("/v1/embeddings", api_endpoint(refuse if generate else embeddings), methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
        middleware=[
            Middleware(BearerAuth, token=runtime.config.token),
            *([Middleware(FaultInjector, faults=runtime.config.faults)] if runtime.config.faults.active else []),
        ],
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
        auth="bearer" if config.token else "none",
    )
    if not config.token:
        print(
            f"hangar-runtime: warning: no token configured (--token-file or HANGAR_RUNTIME_TOKEN): "
            f"/v1/* and /metrics answer anyone who reaches {config.host}:{config.port}",
            file=sys.stderr,
            flush=True,
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
