"""Roles and permissions: the single table both the REST API and the dashboard enforce."""

from __future__ import annotations

from enum import StrEnum

from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    OPERATOR = "operator", "Operator"
    VIEWER = "viewer", "Viewer"


class Perm(StrEnum):
    TENANT_VIEW = "tenant.view"
    TENANT_CHANGE = "tenant.change"
    TENANT_DELETE = "tenant.delete"
    MEMBER_VIEW = "member.view"
    MEMBER_CHANGE = "member.change"
    MODEL_VIEW = "model.view"
    MODEL_CHANGE = "model.change"
    TARGET_VIEW = "target.view"
    DEPLOYMENT_VIEW = "deployment.view"
    DEPLOYMENT_CHANGE = "deployment.change"
    APIKEY_VIEW = "apikey.view"
    APIKEY_CHANGE = "apikey.change"
    USAGE_VIEW = "usage.view"
    AUDIT_VIEW = "audit.view"


_VIEWER = {
    Perm.TENANT_VIEW,
    Perm.MEMBER_VIEW,
    Perm.MODEL_VIEW,
    Perm.TARGET_VIEW,
    Perm.DEPLOYMENT_VIEW,
    Perm.APIKEY_VIEW,
    Perm.USAGE_VIEW,
}
_OPERATOR = _VIEWER | {Perm.MODEL_CHANGE, Perm.DEPLOYMENT_CHANGE, Perm.APIKEY_CHANGE}
# Targets are platform resources: no tenant role adds, changes or checks them.
_ADMIN = _OPERATOR | {Perm.MEMBER_CHANGE, Perm.AUDIT_VIEW, Perm.TENANT_CHANGE}
_OWNER = _ADMIN | {Perm.TENANT_DELETE}

ROLE_PERMISSIONS: dict[str, frozenset[Perm]] = {
    Role.VIEWER: frozenset(_VIEWER),
    Role.OPERATOR: frozenset(_OPERATOR),
    Role.ADMIN: frozenset(_ADMIN),
    Role.OWNER: frozenset(_OWNER),
}

ROLE_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2, Role.OWNER: 3}


class TokenScope(models.TextChoices):
    """What a personal access token may do, on top of (never beyond) its user's roles.

    Each scope includes the ones below it: ``admin`` > ``write`` > ``read``.
    """

    READ = "read", "Read: list and show"
    WRITE = "write", "Write: create, change, delete, act"
    ADMIN = "admin", "Admin: members, API keys, tenants, and the platform"


TOKEN_SCOPE_RANK = {TokenScope.READ: 0, TokenScope.WRITE: 1, TokenScope.ADMIN: 2}
DEFAULT_TOKEN_SCOPES = [TokenScope.READ.value]


def token_scope_allows(scopes: list[str], needed: str) -> bool:
    """Whether a token holding ``scopes`` may do what needs ``needed``."""
    held = max((TOKEN_SCOPE_RANK[TokenScope(s)] for s in scopes if s in TokenScope.values), default=-1)
    return held >= TOKEN_SCOPE_RANK[TokenScope(needed)]
