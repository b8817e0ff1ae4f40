"""Let a deletion detach the audit rows that point at what it deletes, and nothing else.

The audit table's PostgreSQL trigger (migration ``0002_tenancy_append_only``) refuses every
UPDATE and DELETE, except an UPDATE that only nulls ``tenant_id`` / ``actor_id`` /
``subject_user_id`` (``0004_subject_user_detach``) inside a
transaction that set ``hangar.audit_detach``. Deleting a tenant or a user is that transaction:
these receivers run in Django's deletion, inside its transaction, before the ``SET_NULL``
updates, whichever path deletes (a service, the shell, a cascade).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connections
from django.db.models.signals import pre_delete


def allow_detaching_audit_rows(sender: Any, instance: Any, using: str, **kwargs: Any) -> None:
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('hangar.audit_detach', 'on', true)")  # this transaction only


def connect() -> None:
    for model in ("tenancy.Tenant", settings.AUTH_USER_MODEL):
        pre_delete.connect(allow_detaching_audit_rows, sender=model, dispatch_uid=f"hangar-audit-detach-{model}")
