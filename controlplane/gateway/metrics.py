"""Prometheus metrics of the gateway, served on the console's ``GET /metrics``.

Label values are bounded: ``model`` is a served model name that exists (unknown names are
reported as ``-``), so a client cannot blow up the series count.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from controlplane.deployments.metrics import control_plane_state

REQUESTS = Counter("hangar_gateway_requests_total", "Gateway answers by model and HTTP status.", ["model", "status"])
ADDED_LATENCY = Histogram(
    "hangar_gateway_added_latency_seconds",
    "Time the gateway itself adds to a request (everything except waiting for the upstream).",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
UPSTREAM_LATENCY = Histogram(
    "hangar_gateway_upstream_seconds",
    "Time from sending to an upstream replica until its answer is complete.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
LIMITER_DECISIONS = Counter(
    "hangar_gateway_limiter_decisions_total",
    "Rate limiter and budget decisions.",
    ["decision", "backend"],  # decision: allowed | rpm | tpm | budget | too_large | unavailable; backend: redis | local
)
REDIS_FALLBACK = Gauge(
    "hangar_gateway_redis_fallback", "1 while Redis is unreachable and limits use the per-process limiter."
)
UPSTREAM_ERRORS = Counter("hangar_gateway_upstream_errors_total", "Failures talking to replicas.", ["kind"])
RETRIES = Counter(
    "hangar_gateway_retries_total", "Requests passed to another replica after one gave no answer.", ["kind"]
)
IN_FLIGHT = Gauge("hangar_gateway_in_flight_requests", "Requests currently proxied by this process.")
COLD_STARTS = Counter("hangar_gateway_cold_starts_total", "Requests that waited for a replica to start.", ["outcome"])
USAGE_FLUSH_FAILURES = Counter("hangar_gateway_usage_flush_failures_total", "Failed usage flushes (retried).")
KEY_CACHE = Counter("hangar_gateway_key_cache_total", "Key cache lookups.", ["result"])  # hit | miss | negative | stale
TOKENS = Counter(
    "hangar_gateway_tokens_total", "Tokens metered by model and kind (prompt | completion).", ["model", "kind"]
)


_request_counters: dict[tuple[str, int], Any] = {}
_decision_counters: dict[tuple[str, str], Any] = {}
_token_counters: dict[str, tuple[Any, Any]] = {}


def count_request(model: str, status: int) -> None:
    """``REQUESTS.labels(...).inc()`` with the label lookup cached (hot path)."""
    child = _request_counters.get((model, status))
    if child is None:
        child = _request_counters[(model, status)] = REQUESTS.labels(model, str(status))
    child.inc()


def count_decision(decision: str, backend: str) -> None:
    child = _decision_counters.get((decision, backend))
    if child is None:
        child = _decision_counters[(decision, backend)] = LIMITER_DECISIONS.labels(decision, backend)
    child.inc()


def count_tokens(model: str, prompt: int, completion: int) -> None:
    children = _token_counters.get(model)
    if children is None:
        children = _token_counters[model] = (TOKENS.labels(model, "prompt"), TOKENS.labels(model, "completion"))
    if prompt:
        children[0].inc(prompt)
    if completion:
        children[1].inc(completion)


def render() -> tuple[bytes, str]:
    """The exposition text: this process's metrics (all workers' when PROMETHEUS_MULTIPROC_DIR is
    set) and the control plane's state, collected now (``controlplane.deployments.metrics``). Blocking:
    call it in a thread."""
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry) + control_plane_state(), CONTENT_TYPE_LATEST


# One thread of its own: a database that hangs on connect stalls scrapes, never the event loop
# or the default executor (aiohttp resolves host names there).
_render_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hangar-metrics")


async def render_async() -> tuple[bytes, str]:
    return await asyncio.get_running_loop().run_in_executor(_render_thread, render)
