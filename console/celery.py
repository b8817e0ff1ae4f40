"""The Celery application used by the worker and beat processes.

Serialization, acknowledgement and prefetch settings live in settings (``CELERY_*``):
JSON only, late acks, reject on worker loss, prefetch 1. The beat schedule comes from
``workers.schedule`` once settings are loaded (intervals are settings).
"""

import os
from typing import Any

import structlog
from celery import Celery, Task
from celery.signals import setup_logging, task_failure, task_postrun, task_prerun, worker_init, worker_ready

from controlplane.core import request_id

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings.local")

app = Celery("hangar")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"], related_name="tasks")
app.autodiscover_tasks(["workers"], related_name="metrics_tasks")
app.steps["worker"].add("console.worker_liveness:HeartbeatFile")


@app.on_after_configure.connect
def _install_beat_schedule(sender: Celery, **_: Any) -> None:
    from workers.schedule import beat_schedule

    sender.conf.beat_schedule = {**beat_schedule(), **(sender.conf.beat_schedule or {})}


@setup_logging.connect
def _keep_django_logging(**_: Any) -> None:
    """Worker and beat log through Django's ``LOGGING`` (``console.logging``): JSON or plain lines
    with the bound request id, credentials redacted. A receiver here stops Celery from replacing
    the root logger's handlers with its own format."""


@task_prerun.connect
def _bind_task_context(task_id: str | None = None, task: Task | None = None, **_: Any) -> None:
    """Log lines of a task carry its name, id and the request id of the web request that sent it."""
    structlog.contextvars.clear_contextvars()
    if task is None:
        return
    rid = task.request.get(request_id.TASK_HEADER)
    context: dict[str, Any] = {"task": task.name, "task_id": task_id}
    if request_id.is_sane(rid):
        context["request_id"] = rid
    structlog.contextvars.bind_contextvars(**context)


@task_postrun.connect
def _unbind_task_context(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()


@task_failure.connect
def _count_task_failure(sender: Task | None = None, **_: Any) -> None:
    from workers.telemetry import count_task_failure

    count_task_failure(getattr(sender, "name", "") or "")


@worker_init.connect
def _prepare_worker_metrics(**_: Any) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from workers.telemetry import prepare_exposition

    try:
        prepare_exposition()
    except ImproperlyConfigured as exc:
        # Celery logs and swallows a signal handler's exceptions; a worker that cannot serve
        # the metrics it was told to serve must not start as if it did.
        structlog.get_logger(__name__).critical(str(exc))
        raise SystemExit(1) from None


@worker_ready.connect
def _serve_worker_metrics(**_: Any) -> None:
    from workers.telemetry import serve

    serve()
