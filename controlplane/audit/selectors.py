"""Reading the audit trail, limited to what the caller may see.

- Rows of a tenant: to those who hold ``audit.view`` there.
- Account rows (no tenant; a login, a failed login, a personal access token), about a user: to
  the auditors of the tenants that user belonged to when it happened.
- Every other tenant-less row (platform changes) and every account row: to platform admins.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet

from controlplane.audit.models import AuditLog
from controlplane.tenancy.access import Access
from controlplane.tenancy.choices import Perm
from controlplane.tenancy.models import Membership


def audit_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[AuditLog]:
    filters = filters or {}
    tenant_slug = filters.get("tenant") or None
    tenant_ids = access.tenant_ids(Perm.AUDIT_VIEW)
    if tenant_slug:
        tenant_ids = [tid for tid in tenant_ids if access.slugs.get(tid) == tenant_slug]
    member_then = Membership.objects.filter(
        user_id=OuterRef("subject_user_id"), tenant_id__in=tenant_ids, created_at__lte=OuterRef("created_at")
    )
    visible = Q(tenant_id__in=tenant_ids)
    if tenant_ids:
        visible |= Q(tenant__isnull=True, subject_user__isnull=False) & Q(Exists(member_then))
    if access.is_platform_admin and not tenant_slug:
        visible |= Q(tenant__isnull=True)
    qs = AuditLog.objects.filter(visible)
    for field in ("action", "object_type", "object_id", "actor_repr"):
        if filters.get(field):
            qs = qs.filter(**{field: filters[field]})
    if filters.get("since"):
        qs = qs.filter(created_at__gte=filters["since"])
    if filters.get("until"):
        qs = qs.filter(created_at__lt=filters["until"])
    return qs


def platform_audit_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[AuditLog]:
    """The rows of no tenant, for platform admins: platform changes (targets, tenants, users),
    logins and failed logins, personal access tokens."""
    access.require_platform_admin()
    qs = AuditLog.objects.filter(tenant__isnull=True)
    filters = filters or {}
    for field in ("action", "object_type", "object_id", "actor_repr"):
        if filters.get(field):
            qs = qs.filter(**{field: filters[field]})
    if filters.get("since"):
        qs = qs.filter(created_at__gte=filters["since"])
    if filters.get("until"):
        qs = qs.filter(created_at__lt=filters["until"])
    return qs
