"""Push messages to websocket groups after commit. Group names are derived server-side only."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)


def deployment_group(deployment_id: int) -> str:
    return f"deployment.{deployment_id}"


def tenant_group(tenant_id: int) -> str:
    return f"tenant.{tenant_id}"


def send_now(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": "push", "payload": message})
    except Exception:  # Redis down: live updates pause, nothing else should fail
        logger.warning("could not push to %s", group)


def publish_on_commit(group: str, message: dict[str, Any]) -> None:
    transaction.on_commit(lambda: send_now(group, message))
