"""Sockets follow access, on real servers: two ``uvicorn console.asgi:application`` processes
sharing Redis, real websocket clients (``websockets``), changes made through the REST API.

A member removed, demoted or deactivated, a session logged out or a password reset: the
affected sockets, on both servers, are closed (or re-scoped) within seconds; sockets of others
stay open and keep receiving.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from console.consumers import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from controlplane.core.realtime import deployment_group, send_now, tenant_group
from controlplane.tenancy.choices import Role
from tests.factories import DeploymentFactory, MembershipFactory, PlatformAdminFactory, TenantFactory, UserFactory
from tests.support.ports import free_ports
from tests.support.processes import Process, http_ok
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180), pytest.mark.slow]

CHANNELS_DB = 10  # a Redis database of this module's own: the servers' and this process's channel layer
CLOSED_WITHIN_S = 5.0


@pytest.fixture
def servers(tmp_path: Path, settings: Any) -> Iterator[list[str]]:
    """Two web processes on the test database and one channel layer; yields their base URLs."""
    channels_url = f"{settings.REDIS_URL.rsplit('/', 1)[0]}/{CHANNELS_DB}"
    redis.Redis.from_url(channels_url).flushdb()
    layers = json.loads(json.dumps(settings.CHANNEL_LAYERS))
    layers["default"]["CONFIG"]["hosts"] = [channels_url]
    settings.CHANNEL_LAYERS = layers  # this process's pushes and announcements reach the servers
    s = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "console.settings.test",
        "DATABASE_URL": f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}",
        "REDIS_URL": channels_url,
        "PYTHONUNBUFFERED": "1",
    }
    procs = []
    bases = []
    for n, port in enumerate(free_ports(2)):
        argv = [sys.executable, "-m", "uvicorn", "console.asgi:application", "--host", "127.0.0.1", "--port", port]
        procs.append(Process(f"web{n}", argv, log_path=tmp_path / f"web{n}.log", env=env).start())
        bases.append(f"http://127.0.0.1:{port}")
    try:
        for proc, base in zip(procs, bases, strict=True):
            proc.wait_ready(lambda base=base: http_ok(base + "/login/"), 60, "uvicorn answering", interval=0.2)
        yield bases
    finally:
        for proc in procs:
            proc.stop()


def session_cookie(user: Any) -> tuple[Client, str]:
    client = Client()
    client.force_login(user)
    return client, f"sessionid={client.cookies['sessionid'].value}"


@pytest.fixture
def opened() -> Iterator[contextlib.ExitStack]:
    """The test's sockets, closed when it ends."""
    with contextlib.ExitStack() as stack:
        yield stack


def open_socket(opened: contextlib.ExitStack, base: str, path: str, cookie: str) -> ClientConnection:
    url = base.replace("http://", "ws://") + path
    headers = {"Cookie": cookie, "Origin": base}
    return opened.enter_context(ws_connect(url, additional_headers=headers, open_timeout=10))


def make_live(ws: ClientConnection, group: str) -> None:
    """Push to the socket's group until a push arrives: the server has subscribed it."""

    def arrived() -> bool:
        send_now(group, {"kind": "ping"})
        try:
            return bool(json.loads(ws.recv(timeout=0.3)) == {"kind": "ping"})
        except TimeoutError:
            return False

    wait_for(arrived, 15, f"a push to {group} reaching the socket")


def close_code(ws: ClientConnection, within: float = CLOSED_WITHIN_S) -> int | None:
    """Read until the server closes the socket; its close code (None when still open)."""
    deadline = time.monotonic() + within
    try:
        while (left := deadline - time.monotonic()) > 0:
            ws.recv(timeout=left)
    except TimeoutError:
        return None
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    return None


def still_receives(ws: ClientConnection, group: str) -> bool:
    """A push to the group arrives (after any pings sent while other sockets went live)."""
    send_now(group, {"kind": "event", "n": 1})
    while (message := json.loads(ws.recv(timeout=5))) == {"kind": "ping"}:
        pass
    return bool(message == {"kind": "event", "n": 1})


@pytest.fixture
def team() -> dict[str, Any]:
    tenant = TenantFactory()
    owner, member, bystander = UserFactory(), UserFactory(), UserFactory()
    MembershipFactory(user=owner, tenant=tenant, role=Role.OWNER)
    membership = MembershipFactory(user=member, tenant=tenant, role=Role.OPERATOR)
    MembershipFactory(user=bystander, tenant=tenant, role=Role.VIEWER)
    deployment = DeploymentFactory(tenant=tenant)
    return {"tenant": tenant, "owner": owner, "member": member, "membership": membership,
            "bystander": bystander, "deployment": deployment}  # fmt: skip


def api_as(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def sockets_of(
    opened: contextlib.ExitStack, user: Any, servers: list[str], team: dict[str, Any]
) -> list[tuple[ClientConnection, str]]:
    """The tenant socket on the first server and the deployment's on the second, both live."""
    _, cookie = session_cookie(user)
    deployment = team["deployment"]
    pairs = [
        (open_socket(opened, servers[0], "/ws/tenant/", cookie), tenant_group(team["tenant"].pk)),
        (open_socket(opened, servers[1], f"/ws/deployments/{deployment.pk}/", cookie), deployment_group(deployment.pk)),
    ]
    for ws, group in pairs:
        make_live(ws, group)
    return pairs


def timed(action: Callable[[], Any], sockets: list[tuple[ClientConnection, str]]) -> tuple[list[int | None], float]:
    started = time.monotonic()
    action()
    codes = [close_code(ws) for ws, _ in sockets]
    return codes, time.monotonic() - started


def test_a_removed_members_sockets_close_on_every_server(
    servers: list[str], opened: contextlib.ExitStack, team: dict[str, Any]
) -> None:
    mine = sockets_of(opened, team["member"], servers, team)
    others = sockets_of(opened, team["bystander"], servers, team)
    owner = api_as(team["owner"])

    codes, elapsed = timed(lambda: owner.delete(f"/api/v1/members/{team['membership'].pk}/").status_code == 204, mine)
    assert codes == [CLOSE_FORBIDDEN, CLOSE_FORBIDDEN], codes
    assert elapsed < CLOSED_WITHIN_S
    for ws, group in others:  # the rest of the tenant is undisturbed
        assert still_receives(ws, group)
    # and the removed member cannot come back (refused at the handshake)
    _, cookie = session_cookie(team["member"])
    with pytest.raises(InvalidStatus) as refused:
        open_socket(opened, servers[0], "/ws/tenant/", cookie)
    assert refused.value.response.status_code == 403


def test_a_demoted_member_is_re_scoped_not_dropped(
    servers: list[str], opened: contextlib.ExitStack, team: dict[str, Any]
) -> None:
    mine = sockets_of(opened, team["member"], servers, team)
    response = api_as(team["owner"]).patch(
        f"/api/v1/members/{team['membership'].pk}/", {"role": Role.VIEWER}, format="json"
    )
    assert response.status_code == 200
    for ws, group in mine:
        while (notice := json.loads(ws.recv(timeout=CLOSED_WITHIN_S))) == {"kind": "ping"}:
            pass
        assert notice == {"kind": "access", "tenant": team["tenant"].pk, "role": Role.VIEWER}
        assert still_receives(ws, group)  # a viewer still watches the tenant's deployments


def test_a_deactivated_users_sockets_close(
    servers: list[str], opened: contextlib.ExitStack, team: dict[str, Any]
) -> None:
    mine = sockets_of(opened, team["member"], servers, team)
    admin = api_as(PlatformAdminFactory())
    codes, elapsed = timed(
        lambda: admin.post(f"/api/v1/platform/users/{team['member'].pk}/deactivate/").status_code == 200, mine
    )
    assert codes == [CLOSE_UNAUTHENTICATED, CLOSE_UNAUTHENTICATED], codes
    assert elapsed < CLOSED_WITHIN_S


def test_revoked_sessions_close_their_sockets(
    servers: list[str], opened: contextlib.ExitStack, team: dict[str, Any]
) -> None:
    """Logging out in one browser closes that session's sockets (on both servers) and no other;
    an expired session removed by ``clearsessions`` closes its sockets; a password reset ends
    every other session, and their sockets close too."""
    laptop, laptop_cookie = session_cookie(team["member"])
    _, phone_cookie = session_cookie(team["member"])
    tablet, tablet_cookie = session_cookie(team["member"])
    deployment_path = f"/ws/deployments/{team['deployment'].pk}/"
    group = deployment_group(team["deployment"].pk)
    laptop_sockets = [(open_socket(opened, base, deployment_path, laptop_cookie), group) for base in servers]
    phone_sockets = [(open_socket(opened, base, deployment_path, phone_cookie), group) for base in servers]
    for ws, _ in laptop_sockets + phone_sockets:
        make_live(ws, group)

    codes, _ = timed(lambda: laptop.post("/logout/").status_code == 302, laptop_sockets)
    assert codes == [CLOSE_UNAUTHENTICATED, CLOSE_UNAUTHENTICATED], codes
    for ws, _ in phone_sockets:
        assert still_receives(ws, group)

    tablet_sockets = [(open_socket(opened, servers[0], deployment_path, tablet_cookie), group)]
    make_live(tablet_sockets[0][0], group)
    Session.objects.filter(session_key=tablet.session.session_key).update(expire_date=timezone.now())
    codes, _ = timed(lambda: call_command("clearsessions"), tablet_sockets)
    assert codes == [CLOSE_UNAUTHENTICATED], codes

    admin = api_as(PlatformAdminFactory())
    codes, _ = timed(
        lambda: admin.post(f"/api/v1/platform/users/{team['member'].pk}/reset-password/").status_code == 200,
        phone_sockets,
    )
    assert codes == [CLOSE_UNAUTHENTICATED, CLOSE_UNAUTHENTICATED], codes
