"""Writing audit rows. Every service that changes state calls ``audit_record``."""

from __future__ import annotations

from typing import Any

from django.db.models import Model

from controlplane.audit.models import AuditLog
from controlplane.core.context import Actor


def audit_record(
    *,
    actor: Actor,
    action: str,
    obj: Model | None = None,
    tenant_id: int | None = None,
    object_type: str = "",
    object_id: str = "",
    object_repr: str = "",
    changes: dict[str, Any] | None = None,
    subject_user_id: Any = None,
) -> AuditLog:
    """Write one audit row. ``subject_user_id`` names the user an account event is about (a
    login, a token): with no tenant, the row is shown to that user's tenants' auditors."""
    if obj is not None:
        object_type = object_type or obj._meta.model_name or ""
        object_id = object_id or str(obj.pk)
        object_repr = object_repr or str(obj)[:200]
        if tenant_id is None:
            tenant_id = getattr(obj, "tenant_id", None)
    return AuditLog.objects.create(
        tenant_id=tenant_id,
        actor_id=actor.user_id,
        actor_repr=actor.label[:150],
        action=action,
        object_type=object_type,
        object_id=object_id,
        object_repr=object_repr[:200],
        changes=changes or {},
        source_ip=actor.source_ip,
        subject_user_id=subject_user_id,
    )
