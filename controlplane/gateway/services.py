"""Writes of the gateway: usage batches that can be confirmed after a lost connection, request
timestamps for the autoscaler and the wake-up of a deployment scaled to zero."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import connection, transaction

from controlplane.core.context import Actor
from controlplane.core.exceptions import DomainError
from controlplane.deployments.choices import DesiredState
from controlplane.deployments.models import Deployment
from controlplane.deployments.services import deployment_scale
from controlplane.usage.services import UsageDelta, usage_record_batch

logger = logging.getLogger(__name__)

GATEWAY_ACTOR = Actor(user=None, via="gateway")


def usage_flush(*, deltas: list[UsageDelta], txids: list[int]) -> int:
    """Add a batch of usage in one transaction, whose id is appended to ``txids`` before anything
    is written (PostgreSQL). A caller whose connection broke during the commit does not know if
    the batch was written; ``transaction_committed`` tells it later, so it neither loses the
    batch nor writes it twice."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # Foreign keys checked per statement, not at commit, so that usage_record_batch's
                # fallback for a deleted key or tenant works inside this transaction.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                cursor.execute("SELECT txid_current()")
                txids.append(int(cursor.fetchone()[0]))
        return usage_record_batch(deltas=deltas)


def transaction_committed(*, txid: int) -> bool | None:
    """Whether the transaction committed; ``None`` while it may still commit (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT txid_status(%s)", [txid])
        status = cursor.fetchone()[0]
    if status == "committed":
        return True
    if status == "in progress":
        return None
    return False  # aborted, or crashed (reported as aborted); NULL only for ids far older than ours


def deployments_mark_requested(*, deployment_ids: list[int], at: datetime) -> int:
    """Set ``last_request_at`` (batched by the gateway, never one write per request)."""
    if not deployment_ids:
        return 0
    return Deployment.objects.filter(pk__in=deployment_ids).update(last_request_at=at)


def deployment_wake(*, deployment_id: int, at: datetime) -> bool:
    """Scale a deployment that autoscaled to zero back to ``max(1, min_replicas)``.

    Returns whether a scale-up was requested. Idempotent: a deployment that already wants
    replicas is left alone, so many gateway processes waking it at once scale it once.
    """
    deployment = Deployment.objects.filter(pk=deployment_id).first()
    if deployment is None or deployment.desired_state != DesiredState.RUNNING or deployment.replicas > 0:
        return False
    Deployment.objects.filter(pk=deployment_id).update(last_request_at=at)
    target = min(max(1, deployment.min_replicas), max(1, deployment.max_replicas))
    try:
        deployment_scale(actor=GATEWAY_ACTOR, deployment=deployment, replicas=target)
    except DomainError as exc:
        logger.warning("could not wake deployment %s: %s", deployment_id, exc.message)
        return False
    logger.info("woke deployment %s (scale 0 -> %s) for a waiting request", deployment_id, target)
    return True
