"""Reads of tenants, members and access tokens, scoped to the caller."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet

from controlplane.core.exceptions import NotFound
from controlplane.tenancy.access import PLATFORM_PERMISSION, Access
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


def access_token_list_with_keys(*, user_id: Any) -> QuerySet[AccessToken]:
    """The user's tokens with ``active_keys``: how many API keys each created are still active."""
    return access_token_list(user_id=user_id).annotate(
        active_keys=Count("api_keys", filter=Q(api_keys__revoked_at__isnull=True))
    )


def access_token_get(*, user_id: Any, pk: int) -> AccessToken:
    try:
        return access_token_list(user_id=user_id).get(pk=pk)
    except AccessToken.DoesNotExist:
        raise NotFound("Token not found.") from None


# ----------------------------------------------------------------------------- platform
# Every tenant and user of the installation, for platform admins only.


def platform_tenant_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[Tenant]:
    access.require_platform_admin()
    qs = Tenant.objects.annotate(member_count=Count("memberships"))
    filters = filters or {}
    if filters.get("is_active") is not None:
        qs = qs.filter(is_active=filters["is_active"])
    if filters.get("search"):
        qs = qs.filter(Q(slug__icontains=filters["search"]) | Q(name__icontains=filters["search"]))
    return qs


def platform_tenant_get(*, access: Access, pk: int) -> Tenant:
    try:
        return platform_tenant_list(access=access).get(pk=pk)
    except Tenant.DoesNotExist:
        raise NotFound("Tenant not found.") from None


def platform_user_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[Any]:
    """Users with ``holds_platform_permission`` annotated and their memberships prefetched."""
    access.require_platform_admin()
    user_model = get_user_model()
    app_label, codename = PLATFORM_PERMISSION.split(".", 1)
    permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename)
    direct = user_model.user_permissions.through.objects.filter(user_id=OuterRef("pk"), permission__in=permission)
    via_group = user_model.groups.through.objects.filter(user_id=OuterRef("pk"), group__permissions__in=permission)
    memberships = Membership.objects.select_related("tenant").order_by("tenant__slug")
    qs = (
        user_model.objects.annotate(holds_platform_permission=Exists(direct) | Exists(via_group))
        .prefetch_related(Prefetch("memberships", queryset=memberships))
        .order_by("username")
    )
    filters = filters or {}
    if filters.get("is_active") is not None:
        qs = qs.filter(is_active=filters["is_active"])
    if filters.get("search"):
        qs = qs.filter(Q(username__icontains=filters["search"]) | Q(email__icontains=filters["search"]))
    return qs


def platform_user_get(*, access: Access, pk: int) -> Any:
    user_model = get_user_model()
    try:
        return platform_user_list(access=access).get(pk=pk)
    except user_model.DoesNotExist:
        raise NotFound("User not found.") from None


def platform_admin_flag(user: Any) -> bool:
    """``is_platform_admin`` of a user from ``platform_user_list`` without a query per user."""
    held = getattr(user, "holds_platform_permission", False)
    return bool(user.is_active and (user.is_superuser or (user.is_staff and held)))


def platform_membership_list(*, access: Access, tenant: Tenant) -> QuerySet[Membership]:
    """The members of any tenant, for platform admins."""
    access.require_platform_admin()
    return Membership.objects.filter(tenant=tenant).select_related("user").order_by("user__username")
