"""Websocket consumers: live deployment state, metrics, events and progress.

Security: the session authenticates (``AuthMiddlewareStack``), ``AllowedHostsOriginValidator``
refuses foreign origins, and a consumer joins only groups the server derives from the user's
memberships and the object's tenant; the URL never names a group. Logging out closes every
socket of that session (``user_logged_out`` → the session's group → ``session.close``).

Slow clients: handlers only enqueue, so the consumer keeps draining its channel-layer queue
(bounded by the layer's ``capacity``) while one sender task writes to the socket. Metric pushes
are coalesced to the newest one per deployment while the socket is behind; other messages are
queued up to ``MAX_PENDING`` and a client that falls further behind is disconnected (it
reconnects and re-reads the page state) instead of growing server memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver

from controlplane.core.exceptions import DomainError
from controlplane.core.realtime import deployment_group, tenant_group
from controlplane.deployments.selectors import deployment_get
from controlplane.tenancy.access import access_for
from controlplane.tenancy.choices import Perm

logger = logging.getLogger(__name__)

MAX_PENDING = 100
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_SLOW = 4408
SESSION_TENANT = "hangar_tenant_id"  # same key as console.dashboard.base


def session_group(session_key: str) -> str:
    """Group of one login session's sockets (hashed: the session key is a credential)."""
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:32]


@receiver(user_logged_out)
def close_sockets_on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    layer = get_channel_layer()
    if not session_key or layer is None:
        return
    try:
        async_to_sync(layer.group_send)(session_group(session_key), {"type": "session.close"})
    except Exception:  # Redis down: the socket stays until it drops; the session is gone anyway
        logger.warning("could not close the websockets of a logged-out session")


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """Base: authenticate, join server-chosen groups, forward pushes through a bounded sender."""

    groups_joined: list[str]

    async def connect(self) -> None:
        self.groups_joined = []
        self._queue: deque[dict[str, Any]] = deque()
        self._metrics: dict[Any, dict[str, Any]] = {}
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        user = self.scope.get("user")
        session = self.scope.get("session")
        if user is None or not user.is_authenticated or session is None or not session.session_key:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        try:
            groups = await self.groups_for(user)
        except DomainError as exc:
            await self.close(code=CLOSE_NOT_FOUND if exc.status == 404 else CLOSE_FORBIDDEN)
            return
        for group in [*groups, session_group(session.session_key)]:
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)
        await self.accept()
        self._sender = asyncio.create_task(self._send_loop())

    async def groups_for(self, user: Any) -> list[str]:
        raise NotImplementedError

    async def disconnect(self, code: int) -> None:
        if self._sender is not None:
            self._sender.cancel()
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = []

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Clients only listen; anything they send is ignored."""

    # ----------------------------------------------------------------- channel-layer handlers

    async def push(self, event: dict[str, Any]) -> None:
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return
        if payload.get("kind") == "metrics":
            # Newer metrics supersede older ones: keep only the latest per deployment.
            self._metrics[payload.get("deployment")] = payload
        else:
            if len(self._queue) >= MAX_PENDING:
                logger.info("closing a websocket that fell %d messages behind", MAX_PENDING)
                await self._stop(CLOSE_TOO_SLOW)
                return
            self._queue.append(payload)
        self._wakeup.set()

    async def session_close(self, event: dict[str, Any]) -> None:
        await self._stop(CLOSE_UNAUTHENTICATED)

    async def _stop(self, code: int) -> None:
        if self._sender is not None:
            self._sender.cancel()
            self._sender = None
        await self.close(code=code)

    async def _send_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue or self._metrics:
                if self._queue:
                    payload = self._queue.popleft()
                else:
                    _, payload = self._metrics.popitem()
                await self.send_json(payload)


class DeploymentConsumer(LiveConsumer):
    """``ws/deployments/<id>/``: one deployment, if the user may view it (its own tenant decides)."""

    async def groups_for(self, user: Any) -> list[str]:
        deployment_id = int(self.scope["url_route"]["kwargs"]["deployment_id"])
        return await database_sync_to_async(self._groups)(user, deployment_id)

    @staticmethod
    def _groups(user: Any, deployment_id: int) -> list[str]:
        deployment = deployment_get(access=access_for(user), pk=deployment_id)
        return [deployment_group(deployment.pk)]


class TenantConsumer(LiveConsumer):
    """``ws/tenant/``: the session's current tenant (only ever one the user belongs to)."""

    async def groups_for(self, user: Any) -> list[str]:
        chosen = await database_sync_to_async(self.scope["session"].get)(SESSION_TENANT)
        return await database_sync_to_async(self._groups)(user, chosen)

    @staticmethod
    def _groups(user: Any, chosen: Any) -> list[str]:
        from controlplane.core.exceptions import PermissionDenied

        access = access_for(user)
        tenant_ids = access.tenant_ids(Perm.DEPLOYMENT_VIEW)
        if not tenant_ids:
            raise PermissionDenied("Not a member of any tenant.")
        tenant_id = chosen if chosen in tenant_ids else sorted(tenant_ids)[0]
        return [tenant_group(tenant_id)]
