"""Websocket consumers: live deployment state, metrics, events and progress.

Security: the session authenticates (``AuthMiddlewareStack``), ``AllowedHostsOriginValidator``
refuses foreign origins, and a consumer joins only groups the server derives from the user's
memberships and the object's tenant; the URL never names a group. Logging out closes every
socket of that session (``user_logged_out`` → the session's group → close).

Fan-out: Channels gives every consumer a channel-layer channel of its own, and its Redis layer
wakes every waiting consumer of the process in turn for each message; with a thousand sockets
that costs far more than the sends. Here one ``GroupHub`` per server process (per event loop)
holds a single channel-layer channel per *group* that has local sockets, encodes each message
once and hands it to the group's sockets in memory.

Per socket, what is left is the ASGI send itself. A socket's sender writes everything pending
when it wakes, straight to the server's ``send`` (below the session middleware's wrapper,
which only matters for the handshake), and counts its messages once per wake-up. The server
runs without permessage-deflate (``deploy/console/entrypoint.sh``): compressing each small
JSON frame once per socket cost more CPU than everything else in the fan-out together.

Slow clients: the hub only enqueues, so it keeps draining the channel layer (bounded by the
layer's ``capacity``) while each socket's sender task writes at the client's pace. Metric
pushes are coalesced to the newest one per deployment while the socket is behind; other
messages queue up to ``MAX_PENDING`` and a client that falls further behind is disconnected
(it reconnects and re-reads the page) instead of growing server memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import weakref
from collections import deque
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.sessions import InstanceSessionWrapper
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver
from prometheus_client import Counter, Gauge

from controlplane.core.exceptions import DomainError, PermissionDenied
from controlplane.core.realtime import deployment_group, tenant_group
from controlplane.deployments.selectors import deployment_get
from controlplane.tenancy.access import access_for
from controlplane.tenancy.choices import Perm

logger = logging.getLogger(__name__)

WS_CLIENTS = Gauge(
    "hangar_websocket_clients", "Websocket clients connected to this process.", multiprocess_mode="livesum"
)
WS_MESSAGES = Counter("hangar_websocket_messages_total", "Messages sent to websocket clients.")
WS_SLOW_CLOSES = Counter("hangar_websocket_slow_closes_total", "Websockets closed for falling too far behind.")

MAX_PENDING = 100
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_SLOW = 4408
SESSION_TENANT = "hangar_tenant_id"  # same key as console.dashboard.base
# channels_redis forgets group members after a day; the hub re-adds its channels well before.
GROUP_REFRESH_SECONDS = 3600.0


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


class GroupHub:
    """This process's subscriptions: one channel-layer channel and listener per group with local sockets."""

    _hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupHub] = weakref.WeakKeyDictionary()

    @classmethod
    def current(cls) -> GroupHub:
        loop = asyncio.get_running_loop()
        hub = cls._hubs.get(loop)
        if hub is None:
            hub = cls._hubs[loop] = cls()
        return hub

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.members: dict[str, set[LiveConsumer]] = {}
        self.channels: dict[str, str] = {}
        self.listeners: dict[str, asyncio.Task[None]] = {}
        self.lock = asyncio.Lock()
        self.refresher: asyncio.Task[None] | None = None

    async def join(self, group: str, consumer: LiveConsumer) -> None:
        async with self.lock:
            if group not in self.members:
                channel = await self.layer.new_channel()
                await self.layer.group_add(group, channel)
                self.channels[group] = channel
                self.members[group] = set()
                self.listeners[group] = asyncio.create_task(self._listen(group, channel))
            self.members[group].add(consumer)
            if self.refresher is None:
                self.refresher = asyncio.create_task(self._refresh())

    async def leave(self, group: str, consumer: LiveConsumer) -> None:
        async with self.lock:
            members = self.members.get(group)
            if members is None:
                return
            members.discard(consumer)
            if members:
                return
            del self.members[group]
            self.listeners.pop(group).cancel()
            channel = self.channels.pop(group)
            with contextlib.suppress(Exception):  # Redis down: the entry expires by itself
                await self.layer.group_discard(group, channel)

    async def _listen(self, group: str, channel: str) -> None:
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis hiccup: wait a moment, keep the subscription
                logger.warning("websocket hub lost its channel-layer connection; retrying")
                await asyncio.sleep(1.0)
                continue
            self.deliver(group, message)

    def deliver(self, group: str, message: dict[str, Any]) -> None:
        members = list(self.members.get(group, ()))
        if message.get("type") == "session.close":
            for consumer in members:
                consumer.stop_soon(CLOSE_UNAUTHENTICATED)
            return
        payload = message.get("payload")
        if message.get("type") != "push" or not isinstance(payload, dict):
            return
        text = json.dumps(payload, separators=(",", ":"))  # once per message, not once per socket
        for consumer in members:
            consumer.enqueue(payload, text)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(GROUP_REFRESH_SECONDS)
            for group, channel in list(self.channels.items()):
                with contextlib.suppress(Exception):
                    await self.layer.group_add(group, channel)


class LiveConsumer(AsyncWebsocketConsumer):
    """Base: authenticate, join server-chosen groups through the hub, send through a bounded queue."""

    # No channel-layer channel per socket: the hub subscribes once per group for the process.
    channel_layer_alias = "hangar-no-per-socket-channel"

    async def connect(self) -> None:
        self.joined: list[str] = []
        self._queue: deque[str] = deque()
        self._metrics: dict[Any, str] = {}
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._closing = False
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
        await self.accept()
        self._send_raw = _unwrapped_send(self.base_send)
        WS_CLIENTS.inc()
        self._counted = True
        self._sender = asyncio.create_task(self._send_loop())
        hub = GroupHub.current()
        for group in [*groups, session_group(session.session_key)]:
            await hub.join(group, self)
            self.joined.append(group)

    async def groups_for(self, user: Any) -> list[str]:
        raise NotImplementedError

    async def disconnect(self, code: int) -> None:
        if getattr(self, "_counted", False):
            self._counted = False
            WS_CLIENTS.dec()
        if getattr(self, "_sender", None) is not None:
            self._sender.cancel()  # type: ignore[union-attr]
            self._sender = None
        hub = GroupHub.current()
        for group in getattr(self, "joined", []):
            await hub.leave(group, self)
        self.joined = []

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Clients only listen; anything they send is ignored."""

    # ----------------------------------------------------------------- called by the hub

    def enqueue(self, payload: dict[str, Any], text: str) -> None:
        if self._closing:
            return
        if payload.get("kind") == "metrics":
            # Newer metrics supersede older ones: keep only the latest per deployment.
            self._metrics[payload.get("deployment")] = text
        else:
            if len(self._queue) >= MAX_PENDING:
                logger.info("closing a websocket that fell %d messages behind", MAX_PENDING)
                WS_SLOW_CLOSES.inc()
                self.stop_soon(CLOSE_TOO_SLOW)
                return
            self._queue.append(text)
        self._wakeup.set()

    def stop_soon(self, code: int) -> None:
        if self._closing:
            return
        self._closing = True
        if self._sender is not None:
            self._sender.cancel()
            self._sender = None
        asyncio.get_running_loop().create_task(self.close(code=code))

    async def _send_loop(self) -> None:
        send = self._send_raw
        queue, metrics = self._queue, self._metrics
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            sent = 0
            try:
                while queue or metrics:
                    text = queue.popleft() if queue else metrics.popitem()[1]
                    await send({"type": "websocket.send", "text": text})
                    sent += 1
            finally:
                WS_MESSAGES.inc(sent)


def _unwrapped_send(send: Any) -> Any:
    """The ASGI ``send`` below channels' session wrapper, which inspects the session on every
    message but only ever acts on HTTP responses."""
    owner = getattr(send, "__self__", None)
    while isinstance(owner, InstanceSessionWrapper):
        send = owner.real_send
        owner = getattr(send, "__self__", None)
    return send


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
        access = access_for(user)
        tenant_ids = access.tenant_ids(Perm.DEPLOYMENT_VIEW)
        if not tenant_ids:
            raise PermissionDenied("Not a member of any tenant.")
        tenant_id = chosen if chosen in tenant_ids else sorted(tenant_ids)[0]
        return [tenant_group(tenant_id)]
