"""Websocket consumers over the real ASGI stack: auth, origin, tenant isolation, logout, pushes."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.test import Client, override_settings

from console import consumers
from console.routing import websocket_urlpatterns
from controlplane.core.realtime import deployment_group, send_now, tenant_group
from controlplane.tenancy.choices import Role
from tests.console.wsclient import WebsocketCommunicator
from tests.factories import DeploymentFactory, MembershipFactory, TenantFactory, UserFactory
from tests.support.waiting import wait_for_async

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("private_redis_namespace"),
]

ORIGIN = (b"origin", b"http://testserver")


def application() -> Any:
    return AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))


def _login(user: Any) -> tuple[Client, bytes]:
    client = Client()
    client.force_login(user)
    return client, f"sessionid={client.cookies['sessionid'].value}".encode()


async def connect(path: str, cookie: bytes | None, origin: tuple[bytes, bytes] = ORIGIN) -> WebsocketCommunicator:
    headers = [origin, (b"host", b"testserver")]
    if cookie:
        headers.append((b"cookie", cookie))
    with override_settings(ALLOWED_HOSTS=["testserver"]):
        app = application()
    return WebsocketCommunicator(app, path, headers=headers)


@pytest.fixture
def member() -> dict[str, Any]:
    tenant = TenantFactory()
    user = UserFactory()
    MembershipFactory(user=user, tenant=tenant, role=Role.VIEWER)
    return {"user": user, "tenant": tenant, "deployment": DeploymentFactory(tenant=tenant)}


async def test_unauthenticated_connections_are_refused(member: dict[str, Any]) -> None:
    ws = await connect(f"/ws/deployments/{member['deployment'].pk}/", cookie=None)
    connected, code = await ws.connect()
    assert not connected and code == consumers.CLOSE_UNAUTHENTICATED
    ws = await connect("/ws/tenant/", cookie=b"sessionid=forged")
    connected, code = await ws.connect()
    assert not connected


async def test_wrong_origin_is_refused(member: dict[str, Any]) -> None:
    _, cookie = await sync_to_async(_login)(member["user"])
    ws = await connect(
        f"/ws/deployments/{member['deployment'].pk}/", cookie, origin=(b"origin", b"http://evil.example")
    )
    connected, _ = await ws.connect()
    assert not connected
    ws = await connect(f"/ws/deployments/{member['deployment'].pk}/", cookie, origin=(b"x-no-origin", b""))
    connected, _ = await ws.connect()
    assert not connected
    ok = await connect(f"/ws/deployments/{member['deployment'].pk}/", cookie)
    connected, _ = await ok.connect()
    assert connected
    await ok.disconnect()


async def test_cannot_subscribe_to_another_tenants_deployment(member: dict[str, Any]) -> None:
    other = await sync_to_async(DeploymentFactory)()
    _, cookie = await sync_to_async(_login)(member["user"])
    ws = await connect(f"/ws/deployments/{other.pk}/", cookie)
    connected, code = await ws.connect()
    assert not connected and code == consumers.CLOSE_NOT_FOUND
    # and pushes to the other deployment never reach the user's own sockets
    mine = await connect(f"/ws/deployments/{member['deployment'].pk}/", cookie)
    assert (await mine.connect())[0]
    tenant_ws = await connect("/ws/tenant/", cookie)
    assert (await tenant_ws.connect())[0]
    layer = get_channel_layer()
    await layer.group_send(
        deployment_group(other.pk), {"type": "push", "payload": {"kind": "metrics", "deployment": other.pk}}
    )
    await layer.group_send(
        tenant_group(other.tenant_id), {"type": "push", "payload": {"kind": "event", "deployment": other.pk}}
    )
    assert await mine.receive_nothing(timeout=0.3)
    assert await tenant_ws.receive_nothing(timeout=0.1)
    await mine.disconnect()
    await tenant_ws.disconnect()


async def test_a_pushed_metric_reaches_a_subscribed_client(member: dict[str, Any]) -> None:
    deployment = member["deployment"]
    _, cookie = await sync_to_async(_login)(member["user"])
    ws = await connect(f"/ws/deployments/{deployment.pk}/", cookie)
    tenant_ws = await connect("/ws/tenant/", cookie)
    assert (await ws.connect())[0] and (await tenant_ws.connect())[0]
    payload = {"kind": "metrics", "deployment": deployment.pk, "tokens_per_second": 42.0, "ts": 1.0}
    await sync_to_async(send_now)(deployment_group(deployment.pk), payload)
    assert await ws.receive_json_from(timeout=5) == payload
    event = {"kind": "deployment", "deployment": deployment.pk, "phase": "Running"}
    await sync_to_async(send_now)(tenant_group(member["tenant"].pk), event)
    assert await tenant_ws.receive_json_from(timeout=5) == event
    await ws.disconnect()
    await tenant_ws.disconnect()


async def test_logout_closes_the_sessions_sockets(member: dict[str, Any]) -> None:
    client, cookie = await sync_to_async(_login)(member["user"])
    other_client, other_cookie = await sync_to_async(_login)(member["user"])  # a second browser
    ws = await connect(f"/ws/deployments/{member['deployment'].pk}/", cookie)
    other = await connect(f"/ws/deployments/{member['deployment'].pk}/", other_cookie)
    assert (await ws.connect())[0] and (await other.connect())[0]
    response = await sync_to_async(client.post)("/logout/")
    assert response.status_code == 302
    closed = await ws.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": consumers.CLOSE_UNAUTHENTICATED}
    assert await other.receive_nothing(timeout=0.3)  # the other session stays connected
    await other.disconnect()
    # and the logged-out cookie no longer connects
    again = await connect(f"/ws/deployments/{member['deployment'].pk}/", cookie)
    assert not (await again.connect())[0]


async def test_a_slow_client_gets_coalesced_metrics_and_is_dropped_when_far_behind() -> None:
    consumer = consumers.DeploymentConsumer()
    gate = asyncio.Event()
    sent: list[dict[str, Any]] = []
    closed: list[int] = []

    async def slow_send(message: dict[str, Any]) -> None:
        await gate.wait()
        assert message["type"] == "websocket.send"
        sent.append(json.loads(message["text"]))

    async def close(code: int | None = None) -> None:
        closed.append(code or 1000)

    consumer._send_raw = slow_send
    consumer.close = close  # type: ignore[method-assign]
    consumer._queue = deque()
    consumer._metrics = {}
    consumer._closing = False
    consumer._wakeup = asyncio.Event()
    consumer._sender = asyncio.create_task(consumer._send_loop())

    def push(payload: dict[str, Any]) -> None:
        consumer.enqueue(payload, json.dumps(payload))

    push({"kind": "metrics", "deployment": 1, "seq": 0})
    # The sender takes seq 0 and blocks on the socket.
    await wait_for_async(lambda: not consumer._metrics, 5, "the sender taking seq 0")
    for seq in range(1, 500):
        push({"kind": "metrics", "deployment": 1, "seq": seq})
    assert len(consumer._metrics) == 1  # only the newest waits
    gate.set()
    await wait_for_async(lambda: len(sent) == 2 and not consumer._metrics, 5, "both sends done")
    assert [p["seq"] for p in sent] == [0, 499]
    gate.clear()
    push({"kind": "event", "n": -1})
    await wait_for_async(lambda: not consumer._queue, 5, "the sender taking the event and blocking")
    for n in range(consumers.MAX_PENDING + 1):
        push({"kind": "event", "n": n})
    await wait_for_async(lambda: closed, 5, "the slow client closed")
    assert closed == [consumers.CLOSE_TOO_SLOW]
    assert consumer._sender is None


async def test_one_hub_subscription_serves_every_socket_of_a_group(member: dict[str, Any]) -> None:
    deployment = member["deployment"]
    _, cookie = await sync_to_async(_login)(member["user"])
    sockets = [await connect(f"/ws/deployments/{deployment.pk}/", cookie) for _ in range(5)]
    for ws in sockets:
        assert (await ws.connect())[0]
    hub = consumers.GroupHub.current()
    group = deployment_group(deployment.pk)
    assert len(hub.members[group]) == 5 and group in hub.channels
    payload = {"kind": "event", "deployment": deployment.pk, "n": 1}
    await get_channel_layer().group_send(group, {"type": "push", "payload": payload})
    for ws in sockets:
        assert await ws.receive_json_from(timeout=5) == payload
    for ws in sockets:
        await ws.disconnect()
    assert group not in hub.members and group not in hub.channels  # unsubscribed with the last socket


async def test_the_tenant_socket_follows_the_sessions_tenant_and_never_another(member: dict[str, Any]) -> None:
    """A member of two tenants gets only the tenant the session chose; a session that names a
    tenant the user does not belong to falls back to one of theirs, never the named one."""
    second = await sync_to_async(TenantFactory)()
    stranger = await sync_to_async(TenantFactory)()
    await sync_to_async(MembershipFactory)(user=member["user"], tenant=second, role=Role.VIEWER)
    layer = get_channel_layer()

    async def pushes_seen(chosen: int) -> set[int]:
        client, cookie = await sync_to_async(_login)(member["user"])

        def choose() -> None:
            session = client.session
            session[consumers.SESSION_TENANT] = chosen
            session.save()

        await sync_to_async(choose)()
        ws = await connect("/ws/tenant/", cookie)
        assert (await ws.connect())[0]
        for tenant in (member["tenant"], second, stranger):
            await layer.group_send(
                tenant_group(tenant.pk), {"type": "push", "payload": {"kind": "event", "t": tenant.pk}}
            )
        seen = {(await ws.receive_json_from(timeout=5))["t"]}
        assert await ws.receive_nothing(timeout=0.3)
        await ws.disconnect()
        return seen

    assert await pushes_seen(second.pk) == {second.pk}
    assert await pushes_seen(member["tenant"].pk) == {member["tenant"].pk}
    assert await pushes_seen(stranger.pk) == {min(member["tenant"].pk, second.pk)}
