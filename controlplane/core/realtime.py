"""Push messages to websocket groups after commit. Group names are derived server-side only.

Besides the data groups (a deployment, a tenant), every socket is in two control groups: its
login session's and its user's. ``session.close`` on the first closes the session's sockets
(logout, session deleted); ``access.changed`` on the second makes every web process re-check
the access of that user's sockets (membership added, changed or removed, user deactivated,
password reset, tenant switched off), closing or re-scoping them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

SESSION_CLOSE = "session.close"
ACCESS_CHANGED = "access.changed"


def deployment_group(deployment_id: int) -> str:
    return f"deployment.{deployment_id}"


def tenant_group(tenant_id: int) -> str:
    return f"tenant.{tenant_id}"


def user_group(user_id: Any) -> str:
    return f"user.{int(user_id)}"


def session_group(session_key: str) -> str:
    """Group of one login session's sockets (hashed: the session key is a credential)."""
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:32]


def _group_send(group: str, message: dict[str, Any]) -> bool:
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:  # Redis down: live updates pause, nothing else should fail
        logger.warning("could not send %s to a websocket group", message.get("type"))
        return False
    return True


def send_now(group: str, message: dict[str, Any]) -> None:
    _group_send(group, {"type": "push", "payload": message})


def publish_on_commit(group: str, message: dict[str, Any]) -> None:
    transaction.on_commit(lambda: send_now(group, message))


def close_session_sockets(session_key: str) -> None:
    """Close every websocket of one login session, in every web process."""
    _group_send(session_group(session_key), {"type": SESSION_CLOSE})


def access_changed_on_commit(user_ids: Iterable[Any]) -> None:
    """Once the transaction commits, have every web process re-check these users' websockets."""
    ids = sorted({int(user_id) for user_id in user_ids if user_id is not None})
    if ids:
        transaction.on_commit(lambda: _announce_access_changed(ids))


def _announce_access_changed(user_ids: list[int]) -> None:
    for user_id in user_ids:
        _group_send(user_group(user_id), {"type": ACCESS_CHANGED})
