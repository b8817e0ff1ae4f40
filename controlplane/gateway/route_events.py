"""Routing changes announced by the control plane (a replica leaving, ``controlplane.deployments.draining``):
each gateway process drops that tenant's cached routes and reads them again on its next request,
instead of waiting for the cache to expire."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from controlplane.deployments.draining import ROUTES_CHANNEL
from controlplane.gateway.routing import RouteTable

logger = logging.getLogger(__name__)


async def route_listener(redis_url: str, routes: RouteTable) -> None:
    """Invalidate a tenant's routes whenever one is announced; after a lost connection, all of
    them (announcements may have been missed meanwhile)."""
    warned = False
    while True:
        client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=1, health_check_interval=15)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(ROUTES_CHANNEL)
            if warned:
                routes.invalidate(None)
                logger.warning("route listener reconnected to Redis; routing tables dropped")
                warned = False
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    data = message.get("data")
                    text = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)
                    if text.isdigit():
                        routes.invalidate(int(text))
        except (RedisError, OSError) as exc:
            if not warned:
                logger.warning(
                    "route listener lost Redis (%s); routes refresh on their own schedule", type(exc).__name__
                )
                warned = True
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()
        await asyncio.sleep(1.0)
