"""Enqueue background work after the surrounding transaction commits.

The control plane names tasks instead of importing them: ``controlplane`` must not import
``workers`` (layering contract), and a task sent before commit could read stale rows.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app
from django.db import transaction

from controlplane.core import request_id

logger = logging.getLogger(__name__)

RECONCILE_DEPLOYMENT = "workers.tasks.reconcile_deployment"
CHECK_TARGET = "workers.tasks.check_target"


def enqueue_on_commit(task_name: str, *args: Any, countdown: float | None = None) -> None:
    """Send ``task_name(*args)`` once the transaction commits, carrying the current request id."""
    rid = request_id.current()
    headers = {request_id.TASK_HEADER: rid} if rid else None

    def send() -> None:
        try:
            current_app.send_task(task_name, args=list(args), countdown=countdown, headers=headers)
        except Exception:  # broker down: the periodic resync heals it, the write stands
            logger.warning("could not enqueue %s%r; the periodic resync will pick it up", task_name, args)

    transaction.on_commit(send)
