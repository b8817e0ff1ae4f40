"""Writes of tenants, memberships and personal access tokens."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from controlplane.audit.services import audit_record
from controlplane.core import secrets
from controlplane.core.context import Actor
from controlplane.core.exceptions import Conflict, PermissionDenied, ValidationFailed
from controlplane.tenancy.access import Access
from controlplane.tenancy.choices import ROLE_RANK, Role
from controlplane.tenancy.models import QUOTA_FIELDS, AccessToken, Membership, Tenant

TOKEN_PREFIX = "hgp"


@transaction.atomic
def tenant_create(*, actor: Actor, name: str, slug: str = "", owner: Any | None = None) -> Tenant:
    """Create a tenant; the creating user (or ``owner``) becomes its owner."""
    slug = slug or slugify(name)[:50]
    if not slug:
        raise ValidationFailed("A tenant needs a name.", field_errors={"name": ["This field may not be blank."]})
    if Tenant.objects.filter(slug=slug).exists():
        raise ValidationFailed("Slug taken.", field_errors={"slug": [f"A tenant with slug {slug!r} exists."]})
    tenant = Tenant.objects.create(name=name, slug=slug, **quota_defaults())
    owner_id = owner.pk if owner is not None else actor.user_id
    if owner_id is not None:
        Membership.objects.create(user_id=owner_id, tenant=tenant, role=Role.OWNER)
    audit_record(actor=actor, action="tenant.create", obj=tenant, tenant_id=tenant.pk)
    return tenant


def quota_defaults() -> dict[str, Any]:
    """The quota fields a new tenant starts with, from ``settings.HANGAR_QUOTA_DEFAULTS``."""
    defaults = settings.HANGAR_QUOTA_DEFAULTS
    return {field: defaults.get(resource) for resource, field in QUOTA_FIELDS.items()}


# resource -> (type, maximum the column holds)
_QUOTA_BOUNDS: dict[str, tuple[type, float]] = {
    "gpus": (int, 2_147_483_647),
    "gpu_memory_mb": (int, 9_223_372_036_854_775_807),
    "cpus": (float, 1e9),
    "memory_mb": (int, 9_223_372_036_854_775_807),
    "replicas": (int, 2_147_483_647),
    "deployments": (int, 2_147_483_647),
}


def _clean_quota(data: dict[str, Any]) -> dict[str, Any]:
    """{Tenant field: value} from ``data`` keyed by resource (``gpus``) or field (``quota_gpus``)."""
    fields_by_name = QUOTA_FIELDS | {field: field for field in QUOTA_FIELDS.values()}
    clean: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for key, value in data.items():
        field = fields_by_name.get(key)
        if field is None:
            errors[key] = [f"Unknown quota; choose among {list(QUOTA_FIELDS)}."]
            continue
        kind, high = _QUOTA_BOUNDS[field.removeprefix("quota_")]
        if value is None:
            clean[field] = None
        elif (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or (kind is int and isinstance(value, float) and not value.is_integer())
        ):
            errors[key] = [f"Must be {'an integer' if kind is int else 'a number'}, or null for unlimited."]
        elif not 0 <= value <= high:
            errors[key] = [f"Must be between 0 and {high:g}, or null for unlimited."]
        else:
            clean[field] = kind(value)
    if errors:
        raise ValidationFailed("Invalid quota.", field_errors=errors)
    return clean


@transaction.atomic
def tenant_quota_set(*, actor: Actor, tenant: Tenant, data: dict[str, Any]) -> Tenant:
    """Set some of a tenant's quotas (platform admins only; the caller checks). ``data`` maps a
    resource (``gpus``, ``gpu_memory_mb``, ``cpus``, ``memory_mb``, ``replicas``,
    ``deployments``) or its Tenant field (``quota_gpus``...) to a limit: null = unlimited,
    0 = none. A limit below current usage is allowed: running deployments stay, and only changes
    that ask for more of that resource are refused.

    The tenant row is locked as admission locks it, so a change waits for admissions in flight
    and the next admission sees the new limits.
    """
    clean = _clean_quota(data)
    tenant = Tenant.objects.select_for_update(no_key=True).get(pk=tenant.pk)
    changes = {
        field: [getattr(tenant, field), value] for field, value in clean.items() if getattr(tenant, field) != value
    }
    if changes:
        for field, (_, value) in changes.items():
            setattr(tenant, field, value)
        tenant.save(update_fields=[*changes, "updated_at"])
        audit_record(actor=actor, action="tenant.quota", obj=tenant, tenant_id=tenant.pk, changes=changes)
    return tenant


@transaction.atomic
def tenant_update(*, actor: Actor, tenant: Tenant, data: dict[str, Any]) -> Tenant:
    allowed = {"name", "rpm_limit", "tpm_limit", "monthly_token_budget"}
    changes = {k: v for k, v in data.items() if k in allowed and getattr(tenant, k) != v}
    for key, value in changes.items():
        setattr(tenant, key, value)
    if changes:
        tenant.save(update_fields=[*changes, "updated_at"])
        audit_record(actor=actor, action="tenant.update", obj=tenant, tenant_id=tenant.pk, changes=changes)
    return tenant


@transaction.atomic
def tenant_delete(*, actor: Actor, tenant: Tenant) -> None:
    from controlplane.deployments.models import Deployment

    if Deployment.objects.filter(tenant=tenant).exists():
        raise Conflict("Delete the tenant's deployments first.")
    audit_record(actor=actor, action="tenant.delete", obj=tenant, tenant_id=None)
    tenant.delete()


def _check_role_change(access: Access, tenant_id: int, role: str) -> None:
    # Only owners may create or remove owners; nobody grants a role above their own.
    mine = access.role(tenant_id)
    if mine is None or ROLE_RANK[Role(role)] > ROLE_RANK[Role(mine)]:
        raise PermissionDenied("You cannot grant a role above your own.")


@transaction.atomic
def membership_add(*, actor: Actor, access: Access, tenant: Tenant, username: str, role: str) -> Membership:
    if role not in Role.values:
        raise ValidationFailed("Unknown role.", field_errors={"role": [f"Choose one of {Role.values}."]})
    _check_role_change(access, tenant.pk, role)
    user_model = get_user_model()
    try:
        user = user_model.objects.get(username=username)
    except user_model.DoesNotExist:
        raise ValidationFailed("No such user.", field_errors={"username": ["No user with this name."]}) from None
    try:
        with transaction.atomic():
            membership = Membership.objects.create(user=user, tenant=tenant, role=role)
    except IntegrityError:
        raise ValidationFailed(
            "Already a member.", field_errors={"username": ["This user is already a member."]}
        ) from None
    audit_record(actor=actor, action="member.add", obj=membership, changes={"user": username, "role": role})
    return membership


def _owners_left(tenant_id: int, excluding: int) -> int:
    return Membership.objects.filter(tenant_id=tenant_id, role=Role.OWNER).exclude(pk=excluding).count()


@transaction.atomic
def membership_update(*, actor: Actor, access: Access, membership: Membership, role: str) -> Membership:
    if role not in Role.values:
        raise ValidationFailed("Unknown role.", field_errors={"role": [f"Choose one of {Role.values}."]})
    _check_role_change(access, membership.tenant_id, role)
    _check_role_change(access, membership.tenant_id, membership.role)
    if membership.role == Role.OWNER and role != Role.OWNER and _owners_left(membership.tenant_id, membership.pk) == 0:
        raise Conflict("A tenant must keep at least one owner.")
    old = membership.role
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    audit_record(actor=actor, action="member.update", obj=membership, changes={"role": [old, role]})
    return membership


@transaction.atomic
def membership_remove(*, actor: Actor, access: Access, membership: Membership) -> None:
    _check_role_change(access, membership.tenant_id, membership.role)
    if membership.role == Role.OWNER and _owners_left(membership.tenant_id, membership.pk) == 0:
        raise Conflict("A tenant must keep at least one owner.")
    audit_record(actor=actor, action="member.remove", obj=membership)
    membership.delete()


@transaction.atomic
def access_token_create(
    *, actor: Actor, user: Any, name: str, expires_at: datetime | None = None
) -> tuple[AccessToken, str]:
    """Create a personal access token; the returned string is the only time the secret is seen."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationFailed("Expiry in the past.", field_errors={"expires_at": ["Must be in the future."]})
    issued = secrets.issue(TOKEN_PREFIX)
    token = AccessToken.objects.create(
        user=user,
        name=name,
        key_id=issued.key_id,
        digest=secrets.digest(issued.secret),
        display_prefix=issued.display_prefix,
        expires_at=expires_at,
    )
    audit_record(actor=actor, action="token.create", obj=token, changes={"name": name})
    return token, issued.token


@transaction.atomic
def access_token_revoke(*, actor: Actor, token: AccessToken) -> AccessToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at", "updated_at"])
        audit_record(actor=actor, action="token.revoke", obj=token)
    return token
