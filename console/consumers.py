"""Websocket consumers: live deployment state, metrics, events and progress.

Security: the session authenticates (``AuthMiddlewareStack``), ``AllowedHostsOriginValidator``
refuses foreign origins, and a consumer joins only groups the server derives from the user's
memberships and the object's tenant; the URL never names a group.

Sockets follow access: each socket is also in its session's and its user's control groups
(``controlplane.core.realtime``). A session that ends (logout, deleted) closes its sockets; when
the services announce that a user's access changed (membership removed or changed, user
deactivated, password reset, tenant switched off), every web process re-checks that user's
sockets against a freshly loaded session and memberships: a socket whose session no longer
authenticates is closed with 4401, one whose tenant is no longer visible with 4403, and one whose
role changed stays, re-scoped to the new role, and is told so (``{"kind": "access", ...}``, on
which the dashboard reloads its controls).

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
import json
import logging
import weakref
from collections import deque
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.sessions import InstanceSessionWrapper
from django.conf import settings
from prometheus_client import Counter, Gauge

from controlplane.core.exceptions import DomainError, PermissionDenied
from controlplane.core.realtime import (
    ACCESS_CHANGED,
    SESSION_CLOSE,
    deployment_group,
    session_group,
    tenant_group,
    user_group,
)
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
CLOSE_RETRY = 1011  # a server-side failure: the client reconnects (and is checked again)
SESSION_TENANT = "hangar_tenant_id"  # same key as console.dashboard.base
# channels_redis forgets group members after a day; the hub re-adds its channels well before.
GROUP_REFRESH_SECONDS = 3600.0


@dataclass(frozen=True)
class Grant:
    """What one socket may receive: the data groups of one tenant, seen with one role."""

    tenant_id: int
    role: str
    groups: list[str]


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
        if message.get("type") == SESSION_CLOSE:
            for consumer in members:
                consumer.stop_soon(CLOSE_UNAUTHENTICATED)
            return
        if message.get("type") == ACCESS_CHANGED:
            for consumer in members:
                consumer.recheck_soon()
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
    """Base: authenticate, join server-chosen groups through the hub, send through a bounded queue,
    re-check access whenever the user's access changes."""

    # No channel-layer channel per socket: the hub subscribes once per group for the process.
    channel_layer_alias = "hangar-no-per-socket-channel"

    async def connect(self) -> None:
        self.joined: list[str] = []
        self._queue: deque[str] = deque()
        self._metrics: dict[Any, str] = {}
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._closing = False
        self.grant: Grant | None = None
        self._rechecking = False
        self._recheck_requested = False
        user = self.scope.get("user")
        session = self.scope.get("session")
        if user is None or not user.is_authenticated or session is None or not session.session_key:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user_id = user.pk
        self.session_key: str = session.session_key
        # The control groups first: a change committed while access is read below still reaches
        # this socket (as a re-check once it is accepted), instead of falling between the two.
        await self._join([session_group(self.session_key), user_group(user.pk)])
        try:
            grant = await self.grant_for(user)
        except DomainError as exc:
            await self._leave_all()
            await self.close(code=CLOSE_NOT_FOUND if exc.status == 404 else CLOSE_FORBIDDEN)
            return
        if self._closing:  # the session ended while access was read
            await self._leave_all()
            return
        await self.accept()
        self._send_raw = _unwrapped_send(self.base_send)
        WS_CLIENTS.inc()
        self._counted = True
        self._sender = asyncio.create_task(self._send_loop())
        await self._join(grant.groups)
        self.grant = grant
        if self._recheck_requested:
            self.recheck_soon()

    async def grant_for(self, user: Any) -> Grant:
        raise NotImplementedError

    async def _join(self, groups: list[str]) -> None:
        hub = GroupHub.current()
        for group in groups:
            await hub.join(group, self)
            self.joined.append(group)

    async def _leave_all(self) -> None:
        hub = GroupHub.current()
        for group in getattr(self, "joined", []):
            await hub.leave(group, self)
        self.joined = []

    async def disconnect(self, code: int) -> None:
        if getattr(self, "_counted", False):
            self._counted = False
            WS_CLIENTS.dec()
        if getattr(self, "_sender", None) is not None:
            self._sender.cancel()  # type: ignore[union-attr]
            self._sender = None
        self._closing = True
        await self._leave_all()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Clients only listen; anything they send is ignored."""

    # ----------------------------------------------------------------- access re-checks

    def recheck_soon(self) -> None:
        """Called by the hub on ``access.changed``: re-check once, or once more after the running check."""
        if getattr(self, "_closing", True):
            return
        self._recheck_requested = True
        if self.grant is None or self._rechecking:
            return  # still connecting, or a check is running: that one looks again when done
        self._rechecking = True
        asyncio.get_running_loop().create_task(self._recheck())

    async def _recheck(self) -> None:
        try:
            while self._recheck_requested and not self._closing:
                self._recheck_requested = False
                await self._check_access()
        except Exception:
            # The database is unreachable, say: close with a code the client retries, so the
            # access is decided again on connect rather than assumed.
            logger.warning("could not re-check a websocket's access; closing it", exc_info=True)
            self.stop_soon(CLOSE_RETRY)
        finally:
            self._rechecking = False

    async def _check_access(self) -> None:
        user = await get_user({"session": _fresh_session(self.session_key)})
        if not getattr(user, "is_authenticated", False) or user.pk != self.user_id:
            self.stop_soon(CLOSE_UNAUTHENTICATED)  # session ended, password reset, user deactivated
            return
        grant = self.grant
        assert grant is not None
        role = await database_sync_to_async(_visible_role)(user, grant.tenant_id)
        if role is None:
            self.stop_soon(CLOSE_FORBIDDEN)  # removed from the tenant, or the tenant switched off
            return
        if role != grant.role:
            self.grant = Grant(tenant_id=grant.tenant_id, role=role, groups=grant.groups)
            message = {"kind": "access", "tenant": grant.tenant_id, "role": role}
            self.enqueue(message, json.dumps(message, separators=(",", ":")))

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


def _fresh_session(session_key: str) -> Any:
    """The session as stored now (the scope's copy was read once, at connect)."""
    return import_module(settings.SESSION_ENGINE).SessionStore(session_key)


def _visible_role(user: Any, tenant_id: int) -> str | None:
    """The user's role in the tenant, if it still lets them watch its deployments."""
    access = access_for(user)
    return access.role(tenant_id) if access.can(tenant_id, Perm.DEPLOYMENT_VIEW) else None


class DeploymentConsumer(LiveConsumer):
    """``ws/deployments/<id>/``: one deployment, if the user may view it (its own tenant decides)."""

    async def grant_for(self, user: Any) -> Grant:
        deployment_id = int(self.scope["url_route"]["kwargs"]["deployment_id"])
        return await database_sync_to_async(self._grant)(user, deployment_id)

    @staticmethod
    def _grant(user: Any, deployment_id: int) -> Grant:
        access = access_for(user)
        deployment = deployment_get(access=access, pk=deployment_id)
        role = access.role(deployment.tenant_id)
        assert role is not None  # deployment_get found it in one of the user's tenants
        return Grant(tenant_id=deployment.tenant_id, role=role, groups=[deployment_group(deployment.pk)])


class TenantConsumer(LiveConsumer):
    """``ws/tenant/``: the session's current tenant (only ever one the user belongs to)."""

    async def grant_for(self, user: Any) -> Grant:
        chosen = await database_sync_to_async(self.scope["session"].get)(SESSION_TENANT)
        return await database_sync_to_async(self._grant)(user, chosen)

    @staticmethod
    def _grant(user: Any, chosen: Any) -> Grant:
        access = access_for(user)
        tenant_ids = access.tenant_ids(Perm.DEPLOYMENT_VIEW)
        if not tenant_ids:
            raise PermissionDenied("Not a member of any tenant.")
        tenant_id = chosen if chosen in tenant_ids else sorted(tenant_ids)[0]
        return Grant(tenant_id=tenant_id, role=str(access.role(tenant_id)), groups=[tenant_group(tenant_id)])
