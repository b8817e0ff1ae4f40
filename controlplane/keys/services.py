"""Creating and revoking gateway API keys. The secret is returned once and never stored."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane.audit.services import audit_record
from controlplane.core import secrets
from controlplane.core.context import Actor
from controlplane.core.exceptions import ValidationFailed
from controlplane.keys.choices import DEFAULT_SCOPES, KEY_PREFIX, Scope
from controlplane.keys.models import ApiKey
from controlplane.tenancy.models import Tenant

logger = logging.getLogger(__name__)

# Pub/sub channel on which every gateway process hears about revoked keys and drops them
# from its cache at once.
REVOCATION_CHANNEL = "hangar:keys:revoked"
# ...and a marker per revoked key (``<prefix><key id>`` = revocation time, epoch seconds) that a
# gateway checks while the database is unreachable and it serves keys it loaded earlier, so a
# revocation it did not hear (its Redis connection was down at the time) is still honoured.
# It outlives the longest a gateway serves a key without reading it again from the database.
REVOCATION_MARKER_PREFIX = "hangar:keys:revoked:"
REVOCATION_MARKER_SECONDS = 7 * 24 * 3600
MAX_ALLOWED_MODELS = 100
MAX_BURST_PERCENT = 100


class _Invalid(ValueError):
    """A field's value is refused; the message is the field error."""


def _clean_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 100:
        raise _Invalid("Give a name of 1-100 characters.")
    return value.strip()


def _clean_scopes(value: Any) -> list[str]:
    if not isinstance(value, list) or not value or any(s not in Scope.values for s in value):
        raise _Invalid(f"Give a non-empty list from {Scope.values}.")
    return list(dict.fromkeys(value))


def _clean_allowed_models(value: Any) -> list[str]:
    if (
        not isinstance(value, list)
        or len(value) > MAX_ALLOWED_MODELS
        or any(not isinstance(m, str) or not m or len(m) > 100 for m in value)
    ):
        raise _Invalid(f"Give a list of up to {MAX_ALLOWED_MODELS} model names.")
    return list(dict.fromkeys(value))


def _limit(ceiling: int) -> Callable[[Any], int]:
    def clean(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= ceiling:
            raise _Invalid(f"Must be a whole number from 0 to {ceiling} (0 = no limit of its own).")
        return int(value)

    return clean


def _percent(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_BURST_PERCENT:
        raise _Invalid(f"Must be a whole number from 0 to {MAX_BURST_PERCENT} (percent of the limit; 0 = no burst).")
    return int(value)


def _clean_expires_at(value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise _Invalid("Must be a date-time.")
    if value <= timezone.now():
        raise _Invalid("Must be in the future.")
    return value


# field -> (default, cleaner). Upper bounds of the limits are the column sizes: int32 for
# per-minute limits, int64 for the budget. A missing ``expires_at`` (None) is no expiry.
_FIELDS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "name": ("", _clean_name),
    "scopes": (DEFAULT_SCOPES, _clean_scopes),
    "allowed_models": ([], _clean_allowed_models),
    "rpm_limit": (0, _limit(2**31 - 1)),
    "tpm_limit": (0, _limit(2**31 - 1)),
    "monthly_token_budget": (0, _limit(10**15)),
    "burst_percent": (0, _percent),
    "expires_at": (None, _clean_expires_at),
}


def _validate(data: dict[str, Any]) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}
    for field, (default, cleaner) in _FIELDS.items():
        value = data.get(field, default)
        if field == "expires_at" and value is None:
            continue
        try:
            clean[field] = cleaner(value)
        except _Invalid as exc:
            errors[field] = [str(exc)]
    if errors:
        raise ValidationFailed("Invalid API key.", field_errors=errors)
    return clean


@transaction.atomic
def api_key_create(*, actor: Actor, tenant: Tenant, data: dict[str, Any]) -> tuple[ApiKey, str]:
    """Create a key; the returned token is the only time anyone sees the secret."""
    clean = _validate(data)
    issued = secrets.issue(KEY_PREFIX)
    key = ApiKey.objects.create(
        tenant=tenant,
        key_id=issued.key_id,
        digest=secrets.digest(issued.secret),
        display_prefix=issued.display_prefix,
        created_by_id=actor.user_id,
        created_by_token_id=actor.token_id,
        **clean,
    )
    audit_record(
        actor=actor,
        action="apikey.create",
        obj=key,
        changes={k: v for k, v in clean.items() if k != "expires_at"} | {"expires_at": str(clean.get("expires_at"))},
    )
    return key, issued.token


def announce_revoked(key_id: str) -> None:
    """Tell every gateway process to drop the key from its cache (best effort; the cache TTL bounds it)."""
    import time

    import redis

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        # Marker first: a gateway that reacts to the announcement may look for it.
        client.set(REVOCATION_MARKER_PREFIX + key_id, repr(time.time()), ex=REVOCATION_MARKER_SECONDS)
        client.publish(REVOCATION_CHANNEL, key_id)
        client.close()
    except redis.RedisError:
        logger.warning("could not announce a key revocation; caches expire it within their TTL")


def api_key_touch(*, key_pks: list[int], at: datetime) -> int:
    """Record that keys were used (the gateway batches this, about once a minute per key)."""
    if not key_pks:
        return 0
    return ApiKey.objects.filter(pk__in=key_pks).update(last_used_at=at)


@transaction.atomic
def api_key_revoke(*, actor: Actor, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at", "updated_at"])
        audit_record(actor=actor, action="apikey.revoke", obj=key)
        key_id = key.key_id
        transaction.on_commit(lambda: announce_revoked(key_id))
    return key
