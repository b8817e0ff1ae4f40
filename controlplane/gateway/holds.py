"""Requests the gateway holds while a replica starts, counted across every gateway process.

Each held request is a member of the Redis sorted set ``hangar:held:<deployment id>``, scored
with the moment its hold ends at the latest: a process that dies mid-hold leaves members that
expire on their own. The reconciler shows the count in the ``Waking`` phase and the autoscaler
counts it as load. Redis trouble never fails a request: the count is advisory.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid

from django.conf import settings
from redis import asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

KEY = "hangar:held:{}"


class Holds:
    """The gateway's side: ``hold``/``release`` around a request waiting for a replica."""

    def __init__(self, redis_url: str, timeout: float) -> None:
        self.redis = aioredis.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.process = uuid.uuid4().hex[:12]
        self.serial = itertools.count()

    async def hold(self, deployment_id: int, seconds: float) -> str:
        member = f"{self.process}:{next(self.serial)}"
        key = KEY.format(deployment_id)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zadd(key, {member: time.time() + seconds})
                pipe.expire(key, int(seconds) + 60)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            logger.warning("could not record a held request (%s)", type(exc).__name__)
        return member

    async def release(self, deployment_id: int, member: str) -> None:
        try:
            await self.redis.zrem(KEY.format(deployment_id), member)
        except (RedisError, OSError) as exc:
            logger.warning("could not release a held request (%s); it expires with its hold", type(exc).__name__)

    async def close(self) -> None:
        await self.redis.aclose()


def held_count(deployment_id: int) -> int:
    """Requests held for the deployment right now, by every gateway process (0 if Redis fails)."""
    import redis

    key = KEY.format(deployment_id)
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        try:
            pipe = client.pipeline(transaction=False)
            pipe.zremrangebyscore(key, "-inf", time.time())
            pipe.zcard(key)
            _, count = pipe.execute()
        finally:
            client.close()
    except redis.RedisError:
        return 0
    return int(count)
