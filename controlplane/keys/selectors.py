"""Reads of API keys (never their secrets), scoped to the caller's tenants."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from controlplane.core.exceptions import NotFound
from controlplane.keys.models import ApiKey
from controlplane.tenancy.access import Access
from controlplane.tenancy.choices import Perm


def api_key_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[ApiKey]:
    qs = ApiKey.objects.filter(tenant_id__in=access.tenant_ids(Perm.APIKEY_VIEW)).select_related("tenant")
    filters = filters or {}
    if filters.get("tenant"):
        qs = qs.filter(tenant__slug=filters["tenant"])
    if filters.get("active") in {"true", "1"}:
        qs = qs.filter(revoked_at__isnull=True)
    if filters.get("active") in {"false", "0"}:
        qs = qs.filter(revoked_at__isnull=False)
    return qs


def api_key_get(*, access: Access, pk: int) -> ApiKey:
    try:
        return api_key_list(access=access).get(pk=pk)
    except ApiKey.DoesNotExist:
        raise NotFound("API key not found.") from None
