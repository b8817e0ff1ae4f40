"""The one helper that appends to a deployment's event timeline and pushes it live."""

from __future__ import annotations

from controlplane.core.realtime import deployment_group, publish_on_commit, tenant_group
from controlplane.deployments.choices import EventType
from controlplane.deployments.models import Deployment, DeploymentEvent


def event_emit(
    *, deployment: Deployment, reason: str, message: str = "", type: str = EventType.NORMAL, actor: str = ""
) -> DeploymentEvent:
    event = DeploymentEvent.objects.create(
        tenant_id=deployment.tenant_id,
        deployment=deployment,
        reason=reason[:64],
        message=message[:2000],
        type=type,
        actor=actor[:150],
    )
    payload = {
        "kind": "event",
        "deployment": deployment.pk,
        "event": {
            "id": event.pk,
            "type": event.type,
            "reason": event.reason,
            "message": event.message,
            "actor": event.actor,
            "created_at": event.created_at.isoformat(),
        },
    }
    publish_on_commit(deployment_group(deployment.pk), payload)
    publish_on_commit(tenant_group(deployment.tenant_id), payload)
    return event
