"""The gateway's key cache with the database unreachable (its port closed), in process: keys
read before keep working, keys never read answer "database unavailable" (503, not 401), and a
revocation this process never heard of (its pub/sub connection was down) still refuses the key,
from its marker in Redis. End to end under load: ``test_database_outage.py``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, connections

from controlplane.core.context import SYSTEM
from controlplane.gateway import db
from controlplane.gateway.auth import KeyCache, authenticate
from controlplane.gateway.conf import load
from controlplane.gateway.errors import GatewayError
from controlplane.keys.choices import Scope
from controlplane.keys.services import api_key_revoke
from tests.controlplane.gateway.conftest import auth
from tests.support.ports import free_port


def _close() -> None:
    connection.close()  # this thread's connection (the gateway's sync thread, under sync_to_async)


close_gateway_connection = sync_to_async(_close, thread_sensitive=True)


def headers(token: str) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in auth(token).items()]


@pytest.fixture
def take_database_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    async def down() -> None:
        monkeypatch.setitem(connections.settings[DEFAULT_DB_ALIAS], "PORT", str(free_port()))
        await close_gateway_connection()  # the connection the gateway keeps open

    yield down
    monkeypatch.undo()
    db._State.down_since = None  # the next test starts with a reachable database


async def test_last_known_keys_serve_and_missed_revocations_refuse(make_key, settings, take_database_down) -> None:
    cache = KeyCache(dataclasses.replace(load(), key_cache_seconds=0.0))  # every lookup reads again
    cache.connect(settings.REDIS_URL)
    try:
        kept, kept_token = await sync_to_async(make_key)()
        revoked, revoked_token = await sync_to_async(make_key)(tenant=kept.tenant)
        _, unseen_token = await sync_to_async(make_key)(tenant=kept.tenant)
        for token in (kept_token, revoked_token):
            assert (await authenticate(cache, headers(token), Scope.INFERENCE)).tenant_id == kept.tenant_id

        # Revoked while this process was not listening (no listener runs here): no purge, only
        # the marker the key service leaves in Redis. Then the database goes away.
        await sync_to_async(api_key_revoke)(actor=SYSTEM, key=revoked)
        await take_database_down()
        cache.clear()  # what the revocation listener does when it reconnects

        assert (await authenticate(cache, headers(kept_token), Scope.INFERENCE)).pk == kept.pk
        with pytest.raises(GatewayError) as refused:
            await authenticate(cache, headers(revoked_token), Scope.INFERENCE)
        assert (refused.value.status, refused.value.code) == (401, "api_key_revoked")
        with pytest.raises(OperationalError):  # the gateway answers 503 with Retry-After
            await authenticate(cache, headers(unseen_token), Scope.INFERENCE)

        cache.purge(kept.key_id)  # an announcement heard during the outage
        with pytest.raises(GatewayError) as refused:
            await authenticate(cache, headers(kept_token), Scope.INFERENCE)
        assert refused.value.code == "api_key_revoked"
    finally:
        await cache.close()
        await close_gateway_connection()
