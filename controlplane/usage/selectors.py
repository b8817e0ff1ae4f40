"""Reads of metered usage, scoped to the caller's tenants."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, QuerySet, Sum

from controlplane.tenancy.access import Access
from controlplane.tenancy.choices import Perm
from controlplane.usage.models import UsageRecord


def usage_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[UsageRecord]:
    qs = UsageRecord.objects.filter(tenant_id__in=access.tenant_ids(Perm.USAGE_VIEW))
    filters = filters or {}
    if filters.get("tenant"):
        qs = qs.filter(tenant__slug=filters["tenant"])
    if filters.get("api_key"):
        qs = qs.filter(api_key_id=filters["api_key"])
    if filters.get("model"):
        qs = qs.filter(model=filters["model"])
    if filters.get("since"):
        qs = qs.filter(minute__gte=filters["since"])
    if filters.get("until"):
        qs = qs.filter(minute__lt=filters["until"])
    return qs


def usage_totals_by_key(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[Any]:
    return (
        usage_list(access=access, filters=filters)
        .values("api_key_id", "api_key__name", "api_key__display_prefix")
        .annotate(
            requests=Sum("requests"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            errors=Sum("errors"),
            latency_ms_sum=Sum("latency_ms_sum"),
            minutes=Count("id"),
        )
        .order_by("api_key_id")
    )
