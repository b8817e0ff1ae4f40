"""API key verification for the gateway.

parse -> checksum (rejects typos without a database hit) -> key id lookup in a short cache of
key records (≤ 60 s; purged in every process on revoke via Redis pub/sub) -> constant-time
digest compare -> revocation, expiry, scope. The presented token never reaches a log line,
an error message or a metric label.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from controlplane.core import secrets
from controlplane.gateway import metrics
from controlplane.gateway.conf import GatewayConf
from controlplane.gateway.db import run_db
from controlplane.gateway.errors import GatewayError, unauthorized
from controlplane.gateway.selectors import KeyRecord, gateway_key_get
from controlplane.keys.choices import KEY_PREFIX
from controlplane.keys.services import REVOCATION_CHANNEL

logger = logging.getLogger(__name__)

MAX_CACHED = 100_000
KEY_HIT, KEY_MISS, KEY_NEGATIVE = (metrics.KEY_CACHE.labels(r) for r in ("hit", "miss", "negative"))
INVALID = "Invalid API key. Send a valid key as 'Authorization: Bearer hgr_...'."


class KeyCache:
    """Key id -> verified-able record (or ``None`` for unknown ids), with single-flight loads."""

    def __init__(self, conf: GatewayConf) -> None:
        self.ttl = conf.key_cache_seconds
        self.negative_ttl = conf.key_negative_cache_seconds
        self.entries: dict[str, tuple[float, KeyRecord | None]] = {}
        self.loading: dict[str, asyncio.Future[KeyRecord | None]] = {}
        self.epoch = 0  # bumped by every purge; a load that raced a purge is not cached

    async def get(self, key_id: str) -> KeyRecord | None:
        entry = self.entries.get(key_id)
        if entry is not None and entry[0] > time.monotonic():
            (KEY_HIT if entry[1] is not None else KEY_NEGATIVE).inc()
            return entry[1]
        KEY_MISS.inc()
        pending = self.loading.get(key_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyRecord | None] = asyncio.get_running_loop().create_future()
        self.loading[key_id] = future
        epoch = self.epoch
        try:
            record = await run_db(gateway_key_get, key_id=key_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters may not exist
            raise
        finally:
            self.loading.pop(key_id, None)
        future.set_result(record)
        if epoch == self.epoch:
            if len(self.entries) >= MAX_CACHED:
                self._prune()
            ttl = self.ttl if record is not None else self.negative_ttl
            self.entries[key_id] = (time.monotonic() + ttl, record)
        return record

    def _prune(self) -> None:
        now = time.monotonic()
        self.entries = {k: v for k, v in self.entries.items() if v[0] > now}
        if len(self.entries) >= MAX_CACHED:
            self.entries.clear()

    def purge(self, key_id: str) -> None:
        self.epoch += 1
        self.entries.pop(key_id, None)

    def clear(self) -> None:
        self.epoch += 1
        self.entries.clear()


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() != b"bearer":
                return None
            try:
                return token.strip().decode("ascii")
            except UnicodeDecodeError:
                return None
    return None


async def authenticate(cache: KeyCache, headers: list[tuple[bytes, bytes]], scope: str) -> KeyRecord:
    """The verified key allowed to use ``scope``, or a ``GatewayError`` (401/403)."""
    if not any(name == b"authorization" for name, _ in headers):
        raise unauthorized(
            "You didn't provide an API key. Send it as 'Authorization: Bearer hgr_...'.", code="missing_api_key"
        )
    token = bearer_token(headers)
    parsed = secrets.parse(token, KEY_PREFIX) if token else None
    if parsed is None:
        raise unauthorized(INVALID)
    record = await cache.get(parsed.key_id)
    if record is None or not secrets.digest_matches(parsed.secret, record.digest):
        raise unauthorized(INVALID)
    if record.revoked:
        raise unauthorized("This API key has been revoked.", code="api_key_revoked")
    if record.expires_at is not None and record.expires_at <= time.time():
        raise unauthorized("This API key has expired.", code="api_key_expired")
    if scope not in record.scopes:
        raise GatewayError(
            403,
            f"This API key lacks the '{scope}' scope needed for this request.",
            type="permission_error",
            code="insufficient_scope",
        )
    return record


async def revocation_listener(redis_url: str, cache: KeyCache, ready: asyncio.Event | None = None) -> None:
    """Drop revoked keys from this process's cache as soon as any process announces them.

    After a lost connection the whole cache is dropped, since announcements may have been
    missed; while Redis is down the cache TTL alone bounds how long a revoked key works.
    """
    connected_before = False
    warned = False
    while True:
        client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=1, health_check_interval=15)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(REVOCATION_CHANNEL)
            if connected_before or warned:
                cache.clear()
            connected_before = True
            if warned:
                logger.warning("revocation listener reconnected to Redis; key cache dropped")
                warned = False
            if ready is not None:
                ready.set()
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    data = message.get("data")
                    key_id = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)
                    cache.purge(key_id)
        except (RedisError, OSError) as exc:
            if not warned:
                logger.warning(
                    "revocation listener lost Redis (%s); revoked keys expire from the cache within %.0f s",
                    type(exc).__name__,
                    cache.ttl,
                )
                warned = True
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()
        await asyncio.sleep(1.0)
