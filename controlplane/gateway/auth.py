"""API key verification for the gateway.

parse -> keyed checksum (rejects typos and forged tokens without a database hit; a legacy CRC32
checksum only for a key id flagged at migration, from memory) -> key id lookup in a short cache of
key records (≤ 60 s; purged in every process on revoke via Redis pub/sub; the last known
record serves while the database is unreachable) -> constant-time digest compare ->
revocation, expiry, scope. The presented token never reaches a log line,
an error message or a metric label.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

import redis.asyncio as aioredis
from django.db import InterfaceError, OperationalError
from redis.exceptions import RedisError

from controlplane.core import secrets
from controlplane.gateway import metrics
from controlplane.gateway.conf import GatewayConf
from controlplane.gateway.db import RETRY_SECONDS, DatabaseUnavailable, run_db
from controlplane.gateway.errors import GatewayError, unauthorized
from controlplane.gateway.selectors import KeyRecord, gateway_key_get, gateway_legacy_key_ids
from controlplane.keys.choices import KEY_PREFIX
from controlplane.keys.services import REVOCATION_CHANNEL, REVOCATION_MARKER_PREFIX

logger = logging.getLogger(__name__)

MAX_CACHED = 100_000
KEY_HIT, KEY_MISS, KEY_NEGATIVE, KEY_STALE = (metrics.KEY_CACHE.labels(r) for r in ("hit", "miss", "negative", "stale"))
CLOCK_SKEW_SECONDS = 60.0  # between the process that revoked and this one
INVALID = "Invalid API key. Send a valid key as 'Authorization: Bearer hgr_...'."


class KeyCache:
    """Key id -> verified-able record (or ``None`` for unknown ids), with single-flight loads.

    Static stability: every record read from the database is also kept as the key's last known
    state. While the database is unreachable, a key read at most ``key_stale_seconds`` ago is
    served from it, after two revocation checks that need no database: announcements heard on
    pub/sub turn the last known state into a revoked one (``purge``), and the revocation marker
    in Redis (``controlplane.keys.services``) catches announcements this process missed. A key
    never read before gets the database's error (the gateway answers 503, not 401).
    """

    def __init__(self, conf: GatewayConf) -> None:
        self.ttl = conf.key_cache_seconds
        self.negative_ttl = conf.key_negative_cache_seconds
        self.stale_limit = conf.key_stale_seconds
        self.redis_timeout = conf.redis_timeout
        self.entries: dict[str, tuple[float, KeyRecord | None]] = {}
        self.loading: dict[str, asyncio.Future[KeyRecord | None]] = {}
        # key id -> (wall time its read from the database started, record): outage fallback
        self.known: dict[str, tuple[float, KeyRecord]] = {}
        self.redis: aioredis.Redis | None = None
        self.epoch = 0  # bumped by every purge; a load that raced a purge is not cached
        # Key ids that may still present a CRC32 checksum; read once (no new ones are ever made).
        self.legacy_ids: frozenset[str] | None = None
        self._legacy_lock: asyncio.Lock | None = None

    async def legacy_allowed(self, key_id: str) -> bool:
        """Whether a token with a CRC32 checksum may name ``key_id`` (no database read once loaded)."""
        if self.legacy_ids is None:
            if self._legacy_lock is None:
                self._legacy_lock = asyncio.Lock()
            async with self._legacy_lock:
                if self.legacy_ids is None:
                    try:
                        self.legacy_ids = await run_db(gateway_legacy_key_ids)
                    except (OperationalError, InterfaceError):
                        return key_id in self.known  # read before: its record decides
        return key_id in self.legacy_ids

    def connect(self, redis_url: str) -> None:
        self.redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=self.redis_timeout, socket_connect_timeout=self.redis_timeout
        )

    async def close(self) -> None:
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
            self.redis = None

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
        read_at = time.time()
        ttl = self.ttl
        try:
            try:
                record = await run_db(gateway_key_get, key_id=key_id)
            except (OperationalError, InterfaceError):
                record = await self._last_known(key_id)  # or raises
                ttl = RETRY_SECONDS  # try the database again soon
            else:
                if epoch == self.epoch and record is not None:
                    self._remember(key_id, read_at, record)
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
            self.entries[key_id] = (time.monotonic() + (ttl if record is not None else self.negative_ttl), record)
        return record

    def _remember(self, key_id: str, read_at: float, record: KeyRecord) -> None:
        if len(self.known) >= MAX_CACHED and key_id not in self.known:
            cutoff = time.time() - self.stale_limit
            self.known = {k: v for k, v in self.known.items() if v[0] > cutoff}
            if len(self.known) >= MAX_CACHED:
                self.known.clear()
        self.known[key_id] = (read_at, record)

    async def _last_known(self, key_id: str) -> KeyRecord:
        """The key as last read, for when the database is unreachable; re-raises otherwise."""
        known = self.known.get(key_id)
        if known is None or known[0] < time.time() - self.stale_limit:
            raise DatabaseUnavailable("the database is unreachable and this key was not read before")
        read_at, record = known
        if not record.revoked and await self._revoked_since(key_id, read_at):
            record = dataclasses.replace(record, revoked=True)
            self.known[key_id] = (read_at, record)
        KEY_STALE.inc()
        return record

    async def _revoked_since(self, key_id: str, read_at: float) -> bool:
        """Whether Redis holds a revocation of the key made after (or about when) it was read.

        Older markers are left from a tenant deactivated and activated again. Redis unreachable
        as well: only the announcements heard so far count.
        """
        if self.redis is None:
            return False
        try:
            value = await self.redis.get(REVOCATION_MARKER_PREFIX + key_id)
        except (RedisError, OSError):
            return False
        if value is None:
            return False
        try:
            revoked_at = float(value)
        except ValueError:
            return True
        return revoked_at + CLOCK_SKEW_SECONDS >= read_at

    def _prune(self) -> None:
        now = time.monotonic()
        self.entries = {k: v for k, v in self.entries.items() if v[0] > now}
        if len(self.entries) >= MAX_CACHED:
            self.entries.clear()

    def purge(self, key_id: str) -> None:
        """The key was revoked (or its tenant deactivated): forget it, and remember it refused."""
        self.epoch += 1
        self.entries.pop(key_id, None)
        if self.legacy_ids is not None and key_id in self.legacy_ids:
            self.legacy_ids = self.legacy_ids - {key_id}
        known = self.known.get(key_id)
        if known is not None and not known[1].revoked:
            self.known[key_id] = (known[0], dataclasses.replace(known[1], revoked=True))

    def clear(self) -> None:
        """Announcements may have been missed: read every key again (the revocation markers
        cover the last known states until then)."""
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
    if parsed is None or (parsed.legacy and not await cache.legacy_allowed(parsed.key_id)):
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
