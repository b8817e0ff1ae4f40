"""Writes the gateway makes outside metering: request timestamps for the autoscaler and the
wake-up of a deployment scaled to zero."""

from __future__ import annotations

import logging
from datetime import datetime

from controlplane.core.context import Actor
from controlplane.core.exceptions import DomainError
from controlplane.deployments.choices import DesiredState
from controlplane.deployments.models import Deployment
from controlplane.deployments.services import deployment_scale

logger = logging.getLogger(__name__)

GATEWAY_ACTOR = Actor(user=None, via="gateway")


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
