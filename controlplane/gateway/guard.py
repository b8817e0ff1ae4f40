"""The gateway's doors before a key is trusted: the scrape token of ``/metrics`` and the
throttle of failed API key authentications per client address.

``/metrics`` labels traffic with served model names (tenant-identifying), so it answers only a
``Authorization: Bearer <HANGAR_METRICS_TOKEN>`` (constant-time compare); unset, it answers
nobody.

Failed authentications (every 401: missing, malformed, forged, unknown, revoked or expired key)
are counted per client address in fixed windows of ``HANGAR_GATEWAY_AUTH_FAILURE_WINDOW``
seconds, in Redis so that all gateway processes count together (in this process's memory while
Redis is unreachable). From the ``HANGAR_GATEWAY_AUTH_FAILURES``-th failure until the window
ends, the address gets 429 with ``Retry-After`` before its key is even parsed. A blocked address
is remembered in memory, so a blocked client costs no Redis or database call. The address is
ASGI's ``client`` (behind a proxy, run the server with its proxy-headers option so that it is
the client's, not the proxy's).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import math
import time
from collections.abc import MutableMapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from controlplane.gateway.auth import KeyCache, authenticate
from controlplane.gateway.conf import GatewayConf
from controlplane.gateway.errors import GatewayError
from controlplane.gateway.selectors import KeyRecord

logger = logging.getLogger(__name__)

MAX_TRACKED = 100_000  # addresses remembered in memory (blocked, or counted while Redis is down)


def require_scrape_token(conf: GatewayConf, headers: list[tuple[bytes, bytes]]) -> None:
    """Raise 401 unless the request carries the configured scrape token."""
    expected = conf.metrics_token.encode()
    presented = b""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer":
                presented = token.strip()
            break
    if not expected or not hmac.compare_digest(presented, expected):
        raise GatewayError(
            401,
            "Send the scrape token as 'Authorization: Bearer <HANGAR_METRICS_TOKEN>'"
            + ("." if expected else "; /metrics is closed until HANGAR_METRICS_TOKEN is set."),
            code="invalid_scrape_token",
            headers=[(b"www-authenticate", b'Bearer realm="metrics"')],
        )


def client_address(scope: MutableMapping[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"


class AuthThrottle:
    """Counts failed authentications per client address; refuses an address over the limit."""

    def __init__(self, conf: GatewayConf) -> None:
        self.limit = conf.auth_failures
        self.window = conf.auth_failure_window
        self.prefix = conf.redis_prefix + "authfail:"
        self.redis_timeout = conf.redis_timeout
        self.redis: aioredis.Redis | None = None
        self.blocked: dict[str, float] = {}  # address -> wall time its block ends
        self.local: dict[tuple[str, int], int] = {}  # (address, window) -> failures, while Redis is down

    def connect(self, redis_url: str) -> None:
        self.redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=self.redis_timeout, socket_connect_timeout=self.redis_timeout
        )

    async def close(self) -> None:
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
            self.redis = None

    def check(self, address: str) -> None:
        """429 if ``address`` failed too often in the current window."""
        until = self.blocked.get(address)
        if until is None:
            return
        left = until - time.time()
        if left <= 0:
            del self.blocked[address]
            return
        raise GatewayError(
            429,
            f"Too many failed authentications from this address; try again in {math.ceil(left)}s.",
            type="requests",
            code="too_many_auth_failures",
            headers=[(b"retry-after", str(max(1, math.ceil(left))).encode())],
        )

    async def failed(self, address: str) -> None:
        now = time.time()
        window = int(now // self.window)
        count = await self._count(address, window)
        if count >= self.limit:
            if len(self.blocked) >= MAX_TRACKED:
                self.blocked = {a: u for a, u in self.blocked.items() if u > now}
                if len(self.blocked) >= MAX_TRACKED:
                    self.blocked.clear()
            self.blocked[address] = (window + 1) * self.window

    async def _count(self, address: str, window: int) -> int:
        if self.redis is not None:
            key = f"{self.prefix}{address}:{window}"
            try:
                pipe = self.redis.pipeline(transaction=True)
                pipe.incr(key)
                pipe.expire(key, self.window + 1)
                count, _ = await pipe.execute()
                return int(count)
            except (RedisError, OSError):
                pass
        if len(self.local) >= MAX_TRACKED:
            self.local = {k: v for k, v in self.local.items() if k[1] >= window}
            if len(self.local) >= MAX_TRACKED:
                self.local.clear()
        count = self.local.get((address, window), 0) + 1
        self.local[(address, window)] = count
        return count

    async def authenticate(self, cache: KeyCache, scope: MutableMapping[str, Any], needed_scope: str) -> KeyRecord:
        """``controlplane.gateway.auth.authenticate``, refused early for a throttled address and
        counting its 401s."""
        address = client_address(scope)
        self.check(address)
        try:
            return await authenticate(cache, scope["headers"], needed_scope)
        except GatewayError as exc:
            if exc.status == 401:
                await self.failed(address)
            raise
