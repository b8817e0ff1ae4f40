"""What a user may do in which tenant: loaded once per request, checked everywhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controlplane.core.exceptions import NotFound, PermissionDenied, ValidationFailed
from controlplane.tenancy.choices import ROLE_PERMISSIONS, Perm, Role
from controlplane.tenancy.models import Membership


@dataclass(frozen=True)
class Access:
    user_id: Any
    roles: dict[int, str] = field(default_factory=dict)  # tenant id -> role
    slugs: dict[int, str] = field(default_factory=dict)  # tenant id -> slug
    is_superuser: bool = False
    # Platform admins own the infrastructure (targets, grants, quotas, tenants, users); it is not
    # a tenant role and grants nothing inside tenants by itself.
    is_platform_admin: bool = False

    def tenant_ids(self, perm: Perm | None = None) -> list[int]:
        if perm is None:
            return list(self.roles)
        return [tid for tid, role in self.roles.items() if perm in ROLE_PERMISSIONS[role]]

    def role(self, tenant_id: int) -> str | None:
        return self.roles.get(tenant_id)

    def can(self, tenant_id: int, perm: Perm) -> bool:
        role = self.roles.get(tenant_id)
        return role is not None and perm in ROLE_PERMISSIONS[role]

    def require(self, tenant_id: int, perm: Perm) -> None:
        """404 when the caller is not a member (no existence leak), 403 when the role lacks ``perm``."""
        role = self.roles.get(tenant_id)
        if role is None:
            raise NotFound("Not found.")
        if perm not in ROLE_PERMISSIONS[role]:
            raise PermissionDenied(f"Your role ({role}) may not do this ({perm.value}).")

    def require_platform_admin(self) -> None:
        """404 for everyone else: platform endpoints do not exist for tenant roles."""
        if not self.is_platform_admin:
            raise NotFound("Not found.")

    def tenant_id_for_slug(self, slug: str) -> int:
        for tid, tslug in self.slugs.items():
            if tslug == slug:
                return tid
        raise NotFound(f"Tenant {slug!r} not found.")

    def default_tenant_id(self, perm: Perm) -> int:
        """The only tenant where the caller has ``perm``; ambiguous or none is a 400."""
        candidates = self.tenant_ids(perm)
        if len(candidates) == 1:
            return candidates[0]
        if not self.roles:
            raise PermissionDenied("You are not a member of any tenant.")
        if not candidates:
            raise PermissionDenied(f"None of your roles allows this ({perm.value}).")
        raise ValidationFailed(
            "You belong to several tenants; say which one.", field_errors={"tenant": ["This field is required."]}
        )


def access_for(user: Any) -> Access:
    if user is None or not getattr(user, "is_authenticated", False):
        return Access(user_id=None)
    # A deactivated tenant is gone for its members (and everyone else) until it is reactivated.
    rows = Membership.objects.filter(user_id=user.pk, tenant__is_active=True).values_list(
        "tenant_id", "role", "tenant__slug"
    )
    return Access(
        user_id=user.pk,
        roles={tid: role for tid, role, _ in rows},
        slugs={tid: slug for tid, _, slug in rows},
        is_superuser=bool(getattr(user, "is_superuser", False)),
        is_platform_admin=is_platform_admin(user),
    )


PLATFORM_PERMISSION = "tenancy.administer_platform"


def is_platform_admin(user: Any) -> bool:
    """An active superuser, or an active staff user holding ``tenancy.administer_platform``."""
    if user is None or not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return False
    if getattr(user, "is_superuser", False):
        return True
    return bool(getattr(user, "is_staff", False) and user.has_perm(PLATFORM_PERMISSION))


__all__ = ["PLATFORM_PERMISSION", "Access", "Role", "access_for", "is_platform_admin"]
