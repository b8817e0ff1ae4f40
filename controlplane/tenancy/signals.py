"""Websockets follow sessions: a session that ends (logout, deleted, flushed) closes its sockets.

Connected in ``TenancyConfig.ready``. Everything else that changes what a user may see
(memberships, deactivation, password resets, tenants switched off) goes through the services,
which announce it with ``access_changed_on_commit``.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_out
from django.contrib.sessions.models import Session
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from controlplane.core.realtime import close_session_sockets


@receiver(user_logged_out, dispatch_uid="hangar-close-sockets-on-logout")
def close_sockets_on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        close_session_sockets(session_key)


@receiver(post_delete, sender=Session, dispatch_uid="hangar-close-sockets-of-deleted-session")
def close_sockets_of_deleted_session(sender: Any, instance: Session, **kwargs: Any) -> None:
    # Any path that deletes the row: logout, another login's flush, the admin, clearsessions.
    session_key = instance.session_key
    transaction.on_commit(lambda: close_session_sockets(session_key))
