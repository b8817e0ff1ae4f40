"""Writes of tenants, memberships and personal access tokens."""

from __future__ import annotations

import math
import re
import secrets as py_secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify
from django_otp.plugins.otp_totp.models import TOTPDevice

from controlplane.audit.services import audit_record
from controlplane.core import secrets
from controlplane.core.context import Actor
from controlplane.core.exceptions import Conflict, NotFound, PermissionDenied, ValidationFailed
from controlplane.core.realtime import access_changed_on_commit
from controlplane.tenancy.access import PLATFORM_PERMISSION, Access
from controlplane.tenancy.choices import DEFAULT_TOKEN_SCOPES, ROLE_RANK, Role, TokenScope
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
    allowed = {"name", "rpm_limit", "tpm_limit", "monthly_token_budget", "burst_percent"}
    changes = {k: v for k, v in data.items() if k in allowed and v is not None and getattr(tenant, k) != v}
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
    access_changed_on_commit(tenant.memberships.values_list("user_id", flat=True))
    tenant.delete()


def _check_role_change(actor_role: str | None, role: str) -> None:
    # Only owners may create or remove owners; nobody grants a role above their own.
    if actor_role is None or ROLE_RANK[Role(role)] > ROLE_RANK[Role(actor_role)]:
        raise PermissionDenied("You cannot grant a role above your own.")


class _LockedMembers:
    """A tenant's memberships that a change reads, locked until the transaction ends: every
    owner (the rows the last-owner rule counts), the acting user's and the changed one.

    Taken in primary-key order so concurrent changes queue instead of deadlocking. A change that
    waited here sees what the one before it committed (PostgreSQL re-reads a locked row that
    changed, and drops it if it no longer matches), so two owners demoting each other at the same
    moment cannot both count the other as the owner who stays.
    """

    def __init__(self, tenant_id: int, *, actor_user_id: Any, membership_id: int | None = None) -> None:
        wanted = Q(role=Role.OWNER) | Q(user_id=actor_user_id)
        if membership_id is not None:
            wanted |= Q(pk=membership_id)
        self.rows = list(Membership.objects.select_for_update().filter(wanted, tenant_id=tenant_id).order_by("pk"))
        self.actor_role = next((row.role for row in self.rows if row.user_id == actor_user_id), None)

    def get(self, membership_id: int) -> Membership:
        for row in self.rows:
            if row.pk == membership_id:
                return row
        raise NotFound("Not found.")  # removed meanwhile

    def owners_besides(self, membership: Membership) -> int:
        return sum(1 for row in self.rows if row.role == Role.OWNER and row.pk != membership.pk)


@transaction.atomic
def membership_add(*, actor: Actor, access: Access, tenant: Tenant, username: str, role: str) -> Membership:
    if role not in Role.values:
        raise ValidationFailed("Unknown role.", field_errors={"role": [f"Choose one of {Role.values}."]})
    locked = _LockedMembers(tenant.pk, actor_user_id=access.user_id)
    _check_role_change(locked.actor_role, role)
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
    access_changed_on_commit([user.pk])
    return membership


@transaction.atomic
def membership_update(*, actor: Actor, access: Access, membership: Membership, role: str) -> Membership:
    """Change a member's role. The memberships it reads are locked (``_LockedMembers``): the
    actor's role and the tenant's owners are those of the moment of the change, not of the
    request's start, so a tenant always keeps an owner."""
    if role not in Role.values:
        raise ValidationFailed("Unknown role.", field_errors={"role": [f"Choose one of {Role.values}."]})
    locked = _LockedMembers(membership.tenant_id, actor_user_id=access.user_id, membership_id=membership.pk)
    membership = locked.get(membership.pk)
    _check_role_change(locked.actor_role, role)
    _check_role_change(locked.actor_role, membership.role)
    if membership.role == Role.OWNER and role != Role.OWNER and locked.owners_besides(membership) == 0:
        raise Conflict("A tenant must keep at least one owner.")
    old = membership.role
    if old == role:
        return membership
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    audit_record(actor=actor, action="member.update", obj=membership, changes={"role": [old, role]})
    access_changed_on_commit([membership.user_id])
    return membership


@transaction.atomic
def membership_remove(*, actor: Actor, access: Access, membership: Membership) -> None:
    """Remove a member (locked as ``membership_update`` locks); their open websockets close."""
    locked = _LockedMembers(membership.tenant_id, actor_user_id=access.user_id, membership_id=membership.pk)
    membership = locked.get(membership.pk)
    _check_role_change(locked.actor_role, membership.role)
    if membership.role == Role.OWNER and locked.owners_besides(membership) == 0:
        raise Conflict("A tenant must keep at least one owner.")
    audit_record(actor=actor, action="member.remove", obj=membership)
    access_changed_on_commit([membership.user_id])
    membership.delete()


def _clean_token_scopes(scopes: list[str] | None) -> list[str]:
    if scopes is None:
        return list(DEFAULT_TOKEN_SCOPES)
    if not isinstance(scopes, list) or not scopes or any(s not in TokenScope.values for s in scopes):
        raise ValidationFailed(
            "Invalid scopes.", field_errors={"scopes": [f"Give a non-empty list from {TokenScope.values}."]}
        )
    return [s for s in TokenScope.values if s in scopes]  # once each, lowest first


def _clean_token_expiry(expires_at: datetime | None, now: datetime) -> datetime:
    """The expiry a new token gets: the default lifetime when none is named, never past the maximum."""
    if expires_at is None:
        return now + timedelta(days=settings.HANGAR_TOKEN_DEFAULT_DAYS)
    if expires_at <= now:
        raise ValidationFailed("Expiry in the past.", field_errors={"expires_at": ["Must be in the future."]})
    if expires_at > now + timedelta(days=settings.HANGAR_TOKEN_MAX_DAYS):
        raise ValidationFailed(
            "Expiry too far.",
            field_errors={"expires_at": [f"A token lives at most {settings.HANGAR_TOKEN_MAX_DAYS} days."]},
        )
    return expires_at


@transaction.atomic
def access_token_create(
    *,
    actor: Actor,
    user: Any,
    name: str,
    scopes: list[str] | None = None,
    expires_at: datetime | None = None,
) -> tuple[AccessToken, str]:
    """Create a personal access token; the returned string is the only time the secret is seen.

    ``scopes`` default to read-only; ``expires_at`` to ``HANGAR_TOKEN_DEFAULT_DAYS`` from now,
    and may not be later than ``HANGAR_TOKEN_MAX_DAYS`` from now: every token expires.
    """
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationFailed("Invalid name.", field_errors={"name": ["Give a name of 1-100 characters."]})
    clean_scopes = _clean_token_scopes(scopes)
    expiry = _clean_token_expiry(expires_at, timezone.now())
    issued = secrets.issue(TOKEN_PREFIX)
    token = AccessToken.objects.create(
        user=user,
        name=name,
        key_id=issued.key_id,
        digest=secrets.digest(issued.secret),
        display_prefix=issued.display_prefix,
        scopes=clean_scopes,
        expires_at=expiry,
    )
    audit_record(
        actor=actor,
        action="token.create",
        obj=token,
        subject_user_id=user.pk,
        changes={"name": name, "scopes": clean_scopes, "expires_at": expiry.isoformat()},
    )
    return token, issued.token


@transaction.atomic
def access_token_revoke(*, actor: Actor, token: AccessToken, revoke_keys: bool = False) -> AccessToken:
    """Revoke a token (it stops working at once); with ``revoke_keys``, also every API key it
    created that is still active, in whichever tenant (each key's revocation is audited there)."""
    from controlplane.keys.models import ApiKey
    from controlplane.keys.services import api_key_revoke

    token = AccessToken.objects.select_for_update().get(pk=token.pk)
    keys_revoked: list[str] = []
    if revoke_keys:
        for key in ApiKey.objects.filter(created_by_token=token, revoked_at__isnull=True).order_by("pk"):
            api_key_revoke(actor=actor, key=key)
            keys_revoked.append(key.display_prefix)
    if token.revoked_at is None or keys_revoked:
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at", "updated_at"])
        changes: dict[str, Any] = {"keys_revoked": keys_revoked} if revoke_keys else {}
        audit_record(actor=actor, action="token.revoke", obj=token, subject_user_id=token.user_id, changes=changes)
    return token


def access_token_touch(*, token: AccessToken, at: datetime, source_ip: str | None) -> None:
    """Record a token's use: when and from which address (at most every few minutes per token,
    or at once when the address changes)."""
    AccessToken.objects.filter(pk=token.pk).update(last_used_at=at, last_used_ip=source_ip)
    token.last_used_at, token.last_used_ip = at, source_ip


# ----------------------------------------------------------------------------- logins
# Account events: no tenant; the user's tenants' auditors and platform admins see them.

MAX_AUDITED_USERNAME = 150


def login_record(*, actor: Actor, user: Any, path: str, second_factor: bool) -> None:
    """A user signed in (``path``: the login page used)."""
    audit_record(
        actor=actor,
        action="login",
        obj=user,
        subject_user_id=user.pk,
        changes={"path": path[:200], "second_factor": second_factor},
    )


def login_failure_record(*, actor: Actor, username: str, path: str, reason: str, locked_out: bool) -> None:
    """A login failed: a wrong password or code, an unknown or inactive user, or a lockout.
    The user name tried is kept (cut to its maximum length); the password never is."""
    username = username[:MAX_AUDITED_USERNAME]
    user_model = get_user_model()
    subject = (
        user_model.objects.filter(**{user_model.USERNAME_FIELD: username}).only("pk").first() if username else None
    )
    audit_record(
        actor=actor,
        action="login.locked_out" if locked_out else "login.failed",
        object_type="user",
        object_id=str(subject.pk) if subject is not None else "",
        object_repr=username,
        subject_user_id=subject.pk if subject is not None else None,
        changes={"username": username, "path": path[:200], "reason": "locked_out" if locked_out else reason},
    )


# ----------------------------------------------------------------------------- two-factor login (TOTP)


def totp_start(*, actor: Actor, user: Any) -> TOTPDevice:
    """Begin enrolling: a new secret (replacing an unconfirmed one); login asks for codes only
    once ``totp_confirm`` has seen a code from it."""
    device = TOTPDevice.objects.filter(user=user).first()
    if device is not None and device.confirmed:
        raise Conflict("Two-factor login is already on; turn it off first.")
    TOTPDevice.objects.filter(user=user).delete()
    return TOTPDevice.objects.create(user=user, name="authenticator", confirmed=False)


def _check_code(device: TOTPDevice | None, code: str) -> TOTPDevice:
    if device is None or not device.verify_token(code.strip()):
        raise ValidationFailed("Wrong code.", field_errors={"otp_token": ["This code is not valid now."]})
    return device


@transaction.atomic
def totp_confirm(*, actor: Actor, user: Any, code: str) -> TOTPDevice:
    device = _check_code(TOTPDevice.objects.filter(user=user, confirmed=False).first(), code)
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    audit_record(actor=actor, action="user.otp_enable", obj=user, subject_user_id=user.pk)
    return device


@transaction.atomic
def totp_disable(*, actor: Actor, user: Any, code: str) -> None:
    """Turn two-factor login off; a current code proves the device is still in the user's hands."""
    device = _check_code(TOTPDevice.objects.filter(user=user, confirmed=True).first(), code)
    device.delete()
    audit_record(actor=actor, action="user.otp_disable", obj=user, subject_user_id=user.pk)


# ----------------------------------------------------------------------------- platform: tenants and users
# Called by platform admins only (the platform API and dashboard check it); tenant roles never
# reach these. Passwords are returned to the caller once and never logged or audited.

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")
GENERATED_PASSWORD_BYTES = 18  # 24 URL-safe characters


def _validate_new_slug(slug: str) -> None:
    # "_shared" (and any "_..." name) is the model roots' folder for platform-published sources.
    if slug.startswith("_"):
        raise ValidationFailed("Reserved slug.", field_errors={"slug": ["Tenant slugs may not start with '_'."]})
    if not SLUG_RE.fullmatch(slug):
        raise ValidationFailed(
            "Invalid slug.", field_errors={"slug": ["Use 1-50 lowercase letters, digits, '-' or '_'."]}
        )


@transaction.atomic
def platform_tenant_create(
    *, actor: Actor, name: str, slug: str = "", owner_username: str = "", data: dict[str, Any] | None = None
) -> Tenant:
    """Create a tenant for someone else: no member unless ``owner_username`` names its first owner.
    ``data`` may carry the gateway limits (``rpm_limit``, ``tpm_limit``, ``monthly_token_budget``,
    ``burst_percent``)."""
    name = name.strip()
    if not name:
        raise ValidationFailed("A tenant needs a name.", field_errors={"name": ["This field may not be blank."]})
    slug = slug or slugify(name)[:50]
    _validate_new_slug(slug)
    owner = None
    if owner_username:
        owner = get_user_model().objects.filter(username=owner_username, is_active=True).first()
        if owner is None:
            raise ValidationFailed("No such user.", field_errors={"owner": ["No active user with this name."]})
    if Tenant.objects.filter(slug=slug).exists():
        raise ValidationFailed("Slug taken.", field_errors={"slug": [f"A tenant with slug {slug!r} exists."]})
    tenant = Tenant.objects.create(name=name, slug=slug, **quota_defaults())
    if owner is not None:
        Membership.objects.create(user=owner, tenant=tenant, role=Role.OWNER)
    audit_record(
        actor=actor,
        action="tenant.create",
        obj=tenant,
        tenant_id=tenant.pk,
        changes={"name": name, "slug": slug, "owner": owner_username or None},
    )
    if data:
        tenant = tenant_update(actor=actor, tenant=tenant, data=data)
    return tenant


def _announce_tenant_keys_revoked(tenant_id: int) -> None:
    from controlplane.keys.models import ApiKey
    from controlplane.keys.services import announce_revoked

    # Gateways drop the cached keys at once instead of serving them until the cache TTL ends.
    for key_id in ApiKey.objects.filter(tenant_id=tenant_id, revoked_at__isnull=True).values_list("key_id", flat=True):
        announce_revoked(key_id)


def _set_tenant_active(*, actor: Actor, tenant: Tenant, value: bool) -> Tenant:
    changed = Tenant.objects.filter(pk=tenant.pk, is_active=not value).update(
        is_active=value, updated_at=timezone.now()
    )
    tenant.refresh_from_db()
    if changed:
        audit_record(
            actor=actor,
            action="tenant.activate" if value else "tenant.deactivate",
            obj=tenant,
            tenant_id=tenant.pk,
            changes={"is_active": [not value, value]},
        )
        if not value:
            tenant_id = tenant.pk
            transaction.on_commit(lambda: _announce_tenant_keys_revoked(tenant_id))
            access_changed_on_commit(tenant.memberships.values_list("user_id", flat=True))
    return tenant


@transaction.atomic
def tenant_deactivate(*, actor: Actor, tenant: Tenant) -> Tenant:
    """Switch a tenant off: it vanishes from its members' access and the gateway refuses its
    keys. Nothing is deleted; ``tenant_activate`` brings it back as it was."""
    return _set_tenant_active(actor=actor, tenant=tenant, value=False)


@transaction.atomic
def tenant_activate(*, actor: Actor, tenant: Tenant) -> Tenant:
    return _set_tenant_active(actor=actor, tenant=tenant, value=True)


def _generate_password() -> str:
    return py_secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


def _check_password(password: str, user: Any) -> None:
    try:
        validate_password(password, user=user)
    except DjangoValidationError as exc:
        raise ValidationFailed("Weak password.", field_errors={"password": list(exc.messages)}) from None


@transaction.atomic
def user_create(*, actor: Actor, username: str, email: str, password: str | None = None) -> tuple[Any, str]:
    """Create a user. Without ``password`` one is generated and returned: the only time anyone
    sees it. A password the caller chose is not echoed back (the second item is then "")."""
    user_model = get_user_model()
    errors: dict[str, list[str]] = {}
    username = username.strip()
    try:
        UnicodeUsernameValidator()(username)
        if not username or len(username) > 150:
            raise DjangoValidationError("Give 1-150 characters.")
    except DjangoValidationError as exc:
        errors["username"] = list(exc.messages)
    else:
        if user_model.objects.filter(username__iexact=username).exists():
            errors["username"] = ["A user with this name exists."]
    email = user_model.objects.normalize_email(email.strip())
    if email:
        try:
            validate_email(email)
        except DjangoValidationError:
            errors["email"] = ["Enter a valid email address."]
    if errors:
        raise ValidationFailed("Invalid user.", field_errors=errors)
    user = user_model(username=username, email=email)
    shown = ""
    if password is None or password == "":
        password = shown = _generate_password()
    else:
        _check_password(password, user)
    user.set_password(password)
    user.save()
    audit_record(actor=actor, action="user.create", obj=user, changes={"username": username, "email": email})
    return user, shown


def _refuse_self(actor: Actor, user: Any, what: str) -> None:
    if actor.user_id is not None and actor.user_id == user.pk:
        raise Conflict(f"You cannot {what} yourself; ask another platform admin.")


def _refuse_superuser(actor: Actor, user: Any) -> None:
    # Otherwise a platform admin could take over a superuser's account (a new password) and
    # with it the Django admin site and everything a superuser may do.
    if user.is_superuser and not (actor.user is not None and getattr(actor.user, "is_superuser", False)):
        raise PermissionDenied("Only a superuser may change a superuser's account.")


@transaction.atomic
def user_deactivate(*, actor: Actor, user: Any) -> Any:
    """Lock a user out: sessions and personal access tokens stop working on their next request,
    and their open websockets close."""
    _refuse_self(actor, user, "deactivate")
    _refuse_superuser(actor, user)
    if get_user_model().objects.filter(pk=user.pk, is_active=True).update(is_active=False):
        user.refresh_from_db()
        audit_record(actor=actor, action="user.deactivate", obj=user, changes={"is_active": [True, False]})
        access_changed_on_commit([user.pk])
    return user


@transaction.atomic
def user_activate(*, actor: Actor, user: Any) -> Any:
    if get_user_model().objects.filter(pk=user.pk, is_active=False).update(is_active=True):
        user.refresh_from_db()
        audit_record(actor=actor, action="user.activate", obj=user, changes={"is_active": [False, True]})
    return user


@transaction.atomic
def user_reset_password(*, actor: Actor, user: Any) -> str:
    """Give the user a new generated password, returned once. Their signed-in sessions end
    (Django ties sessions to the password hash); personal access tokens keep working."""
    _refuse_superuser(actor, user)
    password = _generate_password()
    user.set_password(password)
    user.save(update_fields=["password"])
    audit_record(actor=actor, action="user.reset_password", obj=user)
    access_changed_on_commit([user.pk])  # their sessions no longer authenticate: close the sockets
    return password


def _platform_permission() -> Permission:
    app_label, codename = PLATFORM_PERMISSION.split(".", 1)
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def _holds_platform_admin(user: Any) -> bool:
    """The right as stored, whether or not the user is active (``is_platform_admin`` also needs that)."""
    if user.is_superuser:
        return True
    permission = _platform_permission()
    return bool(
        user.is_staff
        and (
            user.user_permissions.filter(pk=permission.pk).exists()
            or user.groups.filter(permissions=permission).exists()
        )
    )


@transaction.atomic
def platform_admin_set(*, actor: Actor, user: Any, value: bool) -> Any:
    """Make ``user`` a platform admin (staff plus ``tenancy.administer_platform``) or take it
    away (also superuser status, which implies it). Nobody removes their own admin rights, so
    the installation always keeps the admin who acted."""
    user = get_user_model().objects.select_for_update().get(pk=user.pk)
    before = _holds_platform_admin(user)
    if value:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
        user.user_permissions.add(_platform_permission())
    else:
        _refuse_self(actor, user, "remove the platform admin right from")
        _refuse_superuser(actor, user)
        user.is_staff = False
        user.is_superuser = False
        user.save(update_fields=["is_staff", "is_superuser"])
        user.user_permissions.remove(_platform_permission())
    user = get_user_model().objects.get(pk=user.pk)  # a fresh object: permissions are cached per instance
    after = _holds_platform_admin(user)
    if before != after:
        audit_record(actor=actor, action="user.platform_admin", obj=user, changes={"platform_admin": [before, after]})
    return user
