"""Prometheus metrics of the worker: reconcile passes and task failures, and their endpoint.

Tasks run in Celery's prefork pool processes while the endpoint is served by the worker's main
process, so the metrics go through prometheus_client's multiprocess mode: every process writes
its samples to files in ``PROMETHEUS_MULTIPROC_DIR`` and the endpoint adds them up on each
scrape. That is the simplest arrangement that is correct with a pool of processes (a registry
in the main process would only ever see the main process's own, empty, metrics). So the
endpoint (``HANGAR_WORKER_METRICS_PORT``, off by default) requires that variable to name a
directory of this worker's own, set before the worker starts (the console image's entrypoint
does it); the worker refuses to start with the port set and the directory missing.

The control plane's state (queue depth, deployments and their ready replicas) is not here: the
web process's ``/metrics`` collects it on each scrape (``controlplane.deployments.metrics``), so it is
there even when no worker runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import structlog
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

logger = structlog.get_logger(__name__)

RECONCILE_SECONDS = Histogram(
    "hangar_reconcile_duration_seconds",
    "Duration of one reconcile pass over one deployment, by driver kind.",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
RECONCILE_PASSES = Counter(
    "hangar_reconcile_passes_total",
    "Reconcile passes by driver kind and outcome (converged, progressing, temporary_error, "
    "permanent_error, lease_lost, error).",
    ["kind", "outcome"],
)
TASK_FAILURES = Counter("hangar_celery_task_failures_total", "Celery tasks that raised, by task name.", ["task"])

OUTCOMES = ("converged", "progressing", "temporary_error", "permanent_error", "lease_lost", "error")


class PassTimer:
    """One reconcile pass on a ``kind`` backend: started when made, counted by ``done()``.

    The reconciler sets ``outcome`` as the pass ends; a pass that raised something unexpected
    keeps ``error``.
    """

    __slots__ = ("kind", "outcome", "started")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.outcome = "error"
        self.started = time.perf_counter()

    def done(self) -> None:
        RECONCILE_SECONDS.labels(self.kind).observe(time.perf_counter() - self.started)
        RECONCILE_PASSES.labels(self.kind, self.outcome).inc()


def count_task_failure(task_name: str) -> None:
    TASK_FAILURES.labels(task_name or "unknown").inc()


def _multiprocess_dir() -> Path:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if not value or not Path(value).is_dir():
        raise ImproperlyConfigured(
            f"HANGAR_WORKER_METRICS_PORT={settings.HANGAR_WORKER_METRICS_PORT} needs PROMETHEUS_MULTIPROC_DIR set, "
            "before the worker starts, to an existing directory of this worker's own (its pool processes "
            f"share metrics through it); it is {value!r}."
        )
    return Path(value)


def prepare_exposition() -> None:
    """Worker start, before the pool forks: check the settings, forget a predecessor's samples."""
    if not settings.HANGAR_WORKER_METRICS_PORT:
        return
    directory = _multiprocess_dir()
    mine = f"_{os.getpid()}.db"
    for stale in directory.glob("*.db"):  # files of processes of an earlier run of this worker
        if not stale.name.endswith(mine):
            stale.unlink(missing_ok=True)


def serve() -> int | None:
    """Serve ``/metrics`` on ``HANGAR_WORKER_METRICS_HOST:PORT`` (a thread); the port, or None if off."""
    port = settings.HANGAR_WORKER_METRICS_PORT
    if not port:
        return None
    from prometheus_client import multiprocess

    _multiprocess_dir()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(port, addr=settings.HANGAR_WORKER_METRICS_HOST, registry=registry)
    logger.info("worker metrics served", host=settings.HANGAR_WORKER_METRICS_HOST, port=port)
    return port
