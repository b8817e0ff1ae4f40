"""A Celery beat scheduler that sends periodic tasks only while it holds a lease in Redis.

Two beats (a rollout that starts the new pod early, an operator scaling the Deployment, a
second compose project on the same Redis) would enqueue every periodic task twice. With
``celery -A console beat --scheduler console.beat:LeaderScheduler`` each beat takes the lease
``SET key token NX PX ttl`` before it schedules anything, renews it every third of the TTL,
and releases it on exit; the one without the lease idles and tries again, so it takes over
within about a TTL once the leader dies. A leader that fails to renew (Redis unreachable, the
key expired while it was paused and someone else took it) stops scheduling at once.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Any

import redis
from celery.beat import PersistentScheduler
from django.conf import settings

logger = logging.getLogger(__name__)

LEASE_KEY = "hangar:beat-leader"
# Compare-and-set on the token: never extend or delete a lease another beat holds.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class Lease:
    """One holder's view of a Redis lease: ``hold()`` acquires, renews when due, or reports it lost."""

    def __init__(self, client: redis.Redis, key: str, ttl_s: float) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = max(int(ttl_s * 1000), 1)
        self.renew_every_s = ttl_s / 3
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.held = False
        self._renew_at = 0.0

    def hold(self) -> bool:
        """True while this holder owns the lease (acquiring or renewing it as needed)."""
        now = time.monotonic()
        if self.held and now < self._renew_at:
            return True
        try:
            if self.held:
                owned = bool(self.client.eval(_RENEW, 1, self.key, self.token, str(self.ttl_ms)))
            else:
                owned = bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))
        except redis.RedisError as exc:
            owned = False
            logger.warning("beat lease %s: Redis unreachable (%s)", self.key, exc.__class__.__name__)
        if owned and not self.held:
            logger.info("beat lease %s acquired: scheduling periodic tasks", self.key)
        elif self.held and not owned:
            logger.warning("beat lease %s lost: no longer scheduling periodic tasks", self.key)
        self.held = owned
        self._renew_at = now + self.renew_every_s if owned else 0.0
        return owned

    def seconds_to_next_check(self) -> float:
        if not self.held:
            return self.renew_every_s
        return max(self._renew_at - time.monotonic(), 0.0)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            self.client.eval(_RELEASE, 1, self.key, self.token)
        except redis.RedisError:
            return  # it expires on its own within the TTL
        logger.info("beat lease %s released", self.key)


class LeaderScheduler(PersistentScheduler):
    """``PersistentScheduler`` that ticks only while it holds the beat lease."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=5, socket_timeout=5)
        self.lease = Lease(client, LEASE_KEY, settings.HANGAR_BEAT_LEASE_SECONDS)
        self._waiting_logged = False
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self.lease.hold():
            if not self._waiting_logged:
                logger.info("beat lease %s is held by another beat: standing by", self.lease.key)
                self._waiting_logged = True
            return self.lease.seconds_to_next_check()
        self._waiting_logged = False
        return min(float(super().tick(*args, **kwargs)), self.lease.seconds_to_next_check())

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.lease.release()
