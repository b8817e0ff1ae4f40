"""Reading the audit trail, limited to tenants where the caller may view it."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from controlplane.audit.models import AuditLog
from controlplane.tenancy.access import Access
from controlplane.tenancy.choices import Perm


def audit_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[AuditLog]:
    qs = AuditLog.objects.filter(tenant_id__in=access.tenant_ids(Perm.AUDIT_VIEW))
    filters = filters or {}
    if filters.get("tenant"):
        qs = qs.filter(tenant__slug=filters["tenant"])
    for field in ("action", "object_type", "object_id", "actor_repr"):
        if filters.get(field):
            qs = qs.filter(**{field: filters[field]})
    if filters.get("since"):
        qs = qs.filter(created_at__gte=filters["since"])
    if filters.get("until"):
        qs = qs.filter(created_at__lt=filters["until"])
    return qs
