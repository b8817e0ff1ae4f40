"""Reads of tenants, members and access tokens, scoped to the caller."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from controlplane.core.exceptions import NotFound
from controlplane.tenancy.access import Access
from controlplane.tenancy.choices import Perm
from controlplane.tenancy.models import AccessToken, Membership, Tenant


def tenant_list(*, access: Access) -> QuerySet[Tenant]:
    return Tenant.objects.filter(id__in=access.tenant_ids(Perm.TENANT_VIEW))


def tenant_get(*, access: Access, slug: str) -> Tenant:
    try:
        return tenant_list(access=access).get(slug=slug)
    except Tenant.DoesNotExist:
        raise NotFound("Tenant not found.") from None


def membership_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[Membership]:
    qs = Membership.objects.filter(tenant_id__in=access.tenant_ids(Perm.MEMBER_VIEW)).select_related("user", "tenant")
    filters = filters or {}
    if filters.get("tenant"):
        qs = qs.filter(tenant__slug=filters["tenant"])
    if filters.get("role"):
        qs = qs.filter(role=filters["role"])
    return qs


def membership_get(*, access: Access, pk: int) -> Membership:
    try:
        return membership_list(access=access).get(pk=pk)
    except Membership.DoesNotExist:
        raise NotFound("Member not found.") from None


def access_token_list(*, user_id: Any) -> QuerySet[AccessToken]:
    return AccessToken.objects.filter(user_id=user_id)


def access_token_get(*, user_id: Any, pk: int) -> AccessToken:
    try:
        return access_token_list(user_id=user_id).get(pk=pk)
    except AccessToken.DoesNotExist:
        raise NotFound("Token not found.") from None
