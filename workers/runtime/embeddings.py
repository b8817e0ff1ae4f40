"""``POST /v1/embeddings``: request validation, the pooling engine and the handler.

A replica started with ``--task embed`` loads its model with ``AutoModel`` (no language-model
head) and runs ``EmbeddingEngine`` on the model thread instead of the generation scheduler.
Requests queue their inputs; the engine takes as many inputs as fit (``max_batch_size`` rows,
``TOKEN_BUDGET`` padded tokens), runs one right-padded forward pass and pools each row's last
hidden states:

* ``mean``: the average over the row's real tokens (sentence-transformers' default);
* ``last``: the row's last real token (decoder embedders such as e5-mistral, gte-Qwen);
* ``cls``: the first token (BERT-style encoders).

The pooling comes from ``--pooling``, else from the model directory's sentence-transformers
``1_Pooling/config.json``, else ``mean``. Vectors are L2-normalized. ``dimensions`` keeps the
first N components and normalizes again (Matryoshka truncation); it is accepted only when the
model's config declares ``is_matryoshka`` (or ``matryoshka_dimensions``, which then lists the
widths allowed), and never above the model's width. ``encoding_format`` ``base64`` sends the
little-endian float32 bytes, as OpenAI does (the ``openai`` client asks for it by default).

A replica serves one task: a generative replica answers ``/v1/embeddings`` with a 400, an
embedding replica answers the completion endpoints with a 400 (``refuse_generation``).
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from workers.runtime.api import Consumer, read_json
from workers.runtime.protocol import RETRY_AFTER_SECONDS, ApiError

if TYPE_CHECKING:
    from workers.runtime.metrics import RuntimeMetrics
    from workers.runtime.server import Runtime

log = logging.getLogger(__name__)

TASKS = ("generate", "embed")
POOLINGS = ("mean", "last", "cls")
ENCODINGS = ("float", "base64")
MAX_INPUTS = 2048  # OpenAI's limit per request
TOKEN_BUDGET = 16384  # padded tokens per forward pass
UNSUPPORTED_TASK = "unsupported_model_task"


# ------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """A validated ``/v1/embeddings`` body; each input is text or token ids."""

    model: str
    inputs: list[str | list[int]]
    encoding_format: str
    dimensions: int | None


def _is_token_ids(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


def _inputs(raw: Any) -> list[str | list[int]]:
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif _is_token_ids(raw):
        items = [raw]
    elif isinstance(raw, list) and raw:
        items = raw
    else:
        raise ApiError(
            "'input' must be a non-empty string, array of strings, array of token ids or array of such arrays",
            param="input",
            code="invalid_type",
        )
    if len(items) > MAX_INPUTS:
        raise ApiError(f"'input' holds {len(items)} items; at most {MAX_INPUTS} are allowed", param="input")
    for index, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise ApiError(f"'input[{index}]' is an empty string", param="input")
        elif not _is_token_ids(item):
            raise ApiError(
                f"'input[{index}]' must be a non-empty string or a non-empty array of token ids",
                param="input",
                code="invalid_type",
            )
    return items


def parse_embedding(body: Any, served_model: str) -> EmbeddingRequest:
    """Validate an embeddings request body (400 ``ApiError`` on anything we cannot honour)."""
    if not isinstance(body, dict):
        raise ApiError("request body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError("'model' is required and must be a string", param="model", code="invalid_type")
    if model != served_model:
        raise ApiError(
            f"The model '{model}' does not exist; this server serves '{served_model}'",
            param="model",
            code="model_not_found",
        )
    if "input" not in body:
        raise ApiError("'input' is required", param="input", code="missing_required_parameter")
    fmt = body.get("encoding_format")
    if fmt is None:
        fmt = "float"
    if fmt not in ENCODINGS:
        raise ApiError("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
        raise ApiError("'dimensions' must be an integer >= 1", param="dimensions", code="invalid_type")
    return EmbeddingRequest(model=model, inputs=_inputs(body["input"]), encoding_format=fmt, dimensions=dimensions)


# ------------------------------------------------------------------- the model's embedding traits


def pooling_from_model_dir(model_dir: Path) -> str | None:
    """The pooling a sentence-transformers model directory declares (``1_Pooling/config.json``)."""
    try:
        config = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    for key, pooling in (
        ("pooling_mode_lasttoken", "last"),
        ("pooling_mode_cls_token", "cls"),
        ("pooling_mode_mean_tokens", "mean"),
    ):
        if config.get(key) is True:
            return pooling
    return None


def resolve_pooling(requested: str | None, model_dir: Path) -> str:
    """``--pooling`` if given, else what the model directory declares, else ``mean``."""
    return requested or pooling_from_model_dir(model_dir) or "mean"


@dataclass(frozen=True, slots=True)
class Width:
    """The output widths a model allows: its hidden size, and which truncations."""

    size: int
    matryoshka: bool
    allowed: tuple[int, ...] = ()  # empty with matryoshka: any width up to ``size``

    @classmethod
    def of(cls, config: Any) -> Width:
        size = int(config.hidden_size)
        listed = getattr(config, "matryoshka_dimensions", None)
        allowed = tuple(int(d) for d in listed) if isinstance(listed, list | tuple) else ()
        return cls(size, bool(getattr(config, "is_matryoshka", False)) or bool(allowed), allowed)

    def check(self, dimensions: int | None) -> int:
        """The width to answer with; 400 for a width the model cannot give."""
        if dimensions is None or dimensions == self.size:
            return self.size
        if not self.matryoshka:
            raise ApiError(
                f"This model does not support 'dimensions' (it was not trained for truncated "
                f"embeddings); it answers {self.size} dimensions",
                param="dimensions",
                code="unsupported_value",
            )
        if dimensions > self.size:
            raise ApiError(f"'dimensions' is {dimensions}, above this model's {self.size}", param="dimensions")
        if self.allowed and dimensions not in self.allowed:
            widths = ", ".join(str(d) for d in self.allowed)
            raise ApiError(f"'dimensions' must be one of {widths} for this model", param="dimensions")
        return dimensions


# ------------------------------------------------------------------- the engine


class QueueFullError(Exception):
    """Raised by ``submit`` when ``max_queue`` inputs are already waiting."""


@dataclass(slots=True)
class EmbeddingOutput:
    """A finished request: one pooled, unnormalized float32 row per input (on the CPU)."""

    vectors: Any  # torch.Tensor [n, hidden]
    prompt_tokens: int
    finished: bool = True
    error: str | None = None


@dataclass(slots=True)
class _Job:
    inputs: list[list[int]]
    consumer: Any
    rows: list[Any] = field(default_factory=list)
    done: int = 0
    cancelled: bool = False

    def __post_init__(self) -> None:
        self.rows = [None] * len(self.inputs)


Deliver = Callable[[list[tuple[Any, EmbeddingOutput]]], None]


class EmbeddingEngine:
    """Batches embedding inputs across requests on the model thread."""

    def __init__(
        self,
        model: Any,
        *,
        pooling: str,
        pad_token_id: int = 0,
        max_batch_size: int = 32,
        max_queue: int = 256,
        metrics: RuntimeMetrics | None = None,
        deliver: Deliver | None = None,
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.model = model
        self.device = next(model.parameters()).device
        self.pooling = pooling
        self.pad_token_id = pad_token_id
        self.width = Width.of(model.config)
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.metrics = metrics
        self.deliver: Deliver = deliver or (lambda outputs: None)
        self._cond = threading.Condition()
        self._waiting: collections.deque[tuple[_Job, int]] = collections.deque()

    # ---------------------------------------------------------------- thread-safe API

    def submit(self, inputs: list[list[int]], consumer: Any) -> _Job:
        """Queue one request's inputs; the result is delivered as ``(consumer, EmbeddingOutput)``."""
        job = _Job(inputs, consumer)
        with self._cond:
            if len(self._waiting) + len(inputs) > self.max_queue * self.max_batch_size:
                raise QueueFullError(f"{len(self._waiting)} inputs are already queued")
            self._waiting.extend((job, i) for i in range(len(inputs)))
            self._gauges()
            self._cond.notify()
        return job

    def cancel(self, job: _Job) -> None:
        """Drop a request whose client went away; its queued inputs are skipped."""
        job.cancelled = True

    def run(self, stop: threading.Event) -> None:
        """The model thread's loop; returns when ``stop`` is set."""
        import torch

        with torch.inference_mode():
            while not stop.is_set():
                with self._cond:
                    while not stop.is_set() and not self._waiting:
                        self._cond.wait(timeout=0.5)
                    batch = self._take()
                if batch:
                    self._step(batch)

    def warmup(self) -> None:
        """One small batch of each shape kind, so the first request does not pay for it."""
        vocab = int(self.model.config.vocab_size)
        self.embed([[i % vocab for i in range(3, 40)], [5, 6, 7]])

    def embed(self, inputs: list[list[int]]) -> Any:
        """Pooled (unnormalized) float32 rows for ``inputs``, one forward pass, on the CPU."""
        import torch

        lengths = torch.tensor([len(ids) for ids in inputs], device=self.device)
        longest = int(lengths.max())
        ids = torch.full((len(inputs), longest), self.pad_token_id, dtype=torch.long, device=self.device)
        for row, tokens in enumerate(inputs):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        # Right padding: every row's real tokens sit at positions 0..len-1, as they would alone.
        mask = (torch.arange(longest, device=self.device)[None, :] < lengths[:, None]).long()
        with torch.inference_mode():
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            if self.pooling == "mean":
                pooled = (hidden * mask[:, :, None]).sum(dim=1) / lengths[:, None]
            elif self.pooling == "last":
                pooled = hidden[torch.arange(len(inputs), device=self.device), lengths - 1]
            else:
                pooled = hidden[:, 0]
        return pooled.cpu()

    # ---------------------------------------------------------------- scheduling

    def _take(self) -> list[tuple[_Job, int]]:
        """Pop the inputs of the next forward pass (caller holds the lock)."""
        batch: list[tuple[_Job, int]] = []
        longest = 0
        while self._waiting and len(batch) < self.max_batch_size:
            job, index = self._waiting[0]
            if job.cancelled:
                self._waiting.popleft()
                continue
            longest_if = max(longest, len(job.inputs[index]))
            if batch and longest_if * (len(batch) + 1) > TOKEN_BUDGET:
                break
            batch.append(self._waiting.popleft())
            longest = longest_if
        self._gauges()
        return batch

    def _step(self, batch: list[tuple[_Job, int]]) -> None:
        outputs: list[tuple[Any, EmbeddingOutput]] = []
        try:
            rows = self.embed([job.inputs[index] for job, index in batch])
        except Exception as exc:  # a failed pass fails its requests, not the server
            log.exception("embedding pass failed")
            self._fail({id(job): job for job, _ in batch}.values(), exc, outputs)
            self.deliver(outputs)
            return
        if self.metrics is not None:
            self.metrics.batch_size.set(len(batch))
        for (job, index), row in zip(batch, rows, strict=True):
            if job.cancelled or job.rows[index] is not None:
                continue
            job.rows[index] = row
            job.done += 1
            if job.done == len(job.inputs):
                outputs.append((job.consumer, self._finish(job)))
        self.deliver(outputs)

    def _finish(self, job: _Job) -> EmbeddingOutput:
        import torch

        tokens = sum(len(ids) for ids in job.inputs)
        if self.metrics is not None:
            self.metrics.prompt_tokens.inc(tokens)
        return EmbeddingOutput(torch.stack(job.rows), tokens)

    def _fail(self, jobs: Any, exc: Exception, outputs: list[tuple[Any, EmbeddingOutput]]) -> None:
        with self._cond:
            failed = {id(job) for job in jobs}
            self._waiting = collections.deque(item for item in self._waiting if id(item[0]) not in failed)
            self._gauges()
        for job in jobs:
            job.cancelled = True
            outputs.append((job.consumer, EmbeddingOutput(None, 0, error=f"{type(exc).__name__}: {exc}")))

    def _gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._waiting))


# ------------------------------------------------------------------- HTTP


def encode(vectors: Any, dimensions: int, encoding_format: str) -> list[Any]:
    """Truncate to ``dimensions``, L2-normalize and encode each row."""
    import torch

    rows = vectors[:, :dimensions]
    rows = rows / torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp_min(1e-12)
    if encoding_format == "base64":
        data = rows.contiguous().numpy().astype("<f4")
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in data]
    return [row.tolist() for row in rows]


def _token_ids(runtime: Runtime, inputs: list[str | list[int]]) -> list[list[int]]:
    assert runtime.loaded is not None
    tok = runtime.loaded.tokenizer
    texts = [(i, item) for i, item in enumerate(inputs) if isinstance(item, str)]
    ids: list[list[int]] = [item if isinstance(item, list) else [] for item in inputs]
    if texts:
        encoded = tok([text for _, text in texts])["input_ids"]
        for (i, _), tokens in zip(texts, encoded, strict=True):
            ids[i] = list(tokens)
    vocab = len(tok)
    for index, tokens in enumerate(ids):
        if not tokens:
            raise ApiError(f"'input[{index}]' has no tokens", param="input")
        if len(tokens) > runtime.max_model_len:
            raise ApiError(
                f"This model's maximum context length is {runtime.max_model_len} tokens; "
                f"'input[{index}]' has {len(tokens)} tokens",
                param="input",
                code="context_length_exceeded",
            )
        if any(t < 0 or t >= vocab for t in tokens):
            raise ApiError(f"token ids must be in [0, {vocab})", param="input")
    return ids


async def embeddings(request: Request, runtime: Runtime) -> Response:
    """``POST /v1/embeddings``."""
    body = await read_json(request)
    runtime.require_ready()
    parsed = parse_embedding(body, runtime.config.served_model_name)
    engine: EmbeddingEngine = runtime.engine
    width = engine.width.check(parsed.dimensions)
    inputs = _token_ids(runtime, parsed.inputs)
    consumer = Consumer()
    try:
        job = engine.submit(inputs, consumer)
    except QueueFullError as exc:
        raise ApiError(
            f"server is at capacity ({exc}); retry later",
            status=503,
            type="service_unavailable",
            code="queue_full",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        ) from exc
    runtime.acquire()
    try:
        out: EmbeddingOutput
        _, out = await consumer.queue.get()  # (choice index, output), as ``api.dispatch`` hands them
    except BaseException:
        engine.cancel(job)
        raise
    finally:
        runtime.release()
    if out.error is not None:
        raise ApiError("embedding failed: " + out.error, status=500, type="server_error", code="internal_error")
    data = encode(out.vectors, width, parsed.encoding_format)
    return JSONResponse(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": vector} for i, vector in enumerate(data)],
            "model": parsed.model,
            "usage": {"prompt_tokens": out.prompt_tokens, "total_tokens": out.prompt_tokens},
        }
    )


def refuse_task(task: str) -> Callable[[Request, Runtime], Any]:
    """A handler for an endpoint this replica's task does not serve: always a clear 400."""
    if task == "embed":
        message = "The model '{name}' is an embedding model: it serves /v1/embeddings only."
    else:
        message = "The model '{name}' is not an embedding model: use /v1/chat/completions or /v1/completions."

    async def refuse(request: Request, runtime: Runtime) -> Response:
        runtime.require_ready()
        raise ApiError(message.format(name=runtime.config.served_model_name), param="model", code=UNSUPPORTED_TASK)

    return refuse


def embedding_engine(config: Any, loaded: Any, metrics: RuntimeMetrics, deliver: Deliver) -> EmbeddingEngine:
    """The engine of a ``--task embed`` replica (``config`` is its ``ServerConfig``)."""
    pad = loaded.tokenizer.pad_token_id
    return EmbeddingEngine(
        loaded.model,
        pooling=resolve_pooling(config.pooling, config.model_dir),
        pad_token_id=pad if isinstance(pad, int) else 0,
        max_batch_size=config.max_batch_size,
        max_queue=config.max_queue,
        metrics=metrics,
        deliver=deliver,
    )
