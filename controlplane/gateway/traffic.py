"""Canary traffic: which revision a request goes to, and what the gateway measured of each.

While a canary rollout is splitting (``controlplane.deployments.rollouts``), its route carries a
``Split``: a request goes to the canary revision's replicas with probability ``weight`` %,
decided by a hash of the request id (sticky per request: a client retrying with the same
``X-Request-ID`` lands on the same side) or of the API key (sticky per key: a client sees one
revision throughout). If the chosen side has no ready replica the other one serves.

Every answer of a split route is counted per side, in memory, and flushed to Redis every
``FLUSH_SECONDS`` (``stats_key``: requests, server errors, latency and time-to-first-token
histograms, the first error's time): the worker's analysis reads these, so the verdict rests on
what clients saw through the gateway, every web process included.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
import time
from dataclasses import dataclass, replace

import redis.asyncio as aioredis

from controlplane.deployments.choices import Sticky
from controlplane.deployments.rollouts import BUCKETS, STATS_TTL_SECONDS, stats_key
from controlplane.gateway.selectors import ReplicaTarget, Route, Split

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 0.25
STABLE, CANARY = "stable", "canary"


def side_for(split: Split, *, request_id: str, key_id: str) -> str:
    """STABLE or CANARY for this request, by a stable hash (never Python's salted ``hash``)."""
    token = key_id if split.sticky == Sticky.KEY else request_id
    digest = hashlib.blake2b(f"{split.rollout_id}:{token}".encode(), digest_size=8).digest()
    return CANARY if int.from_bytes(digest) % 10_000 < split.weight * 100 else STABLE


def choose(route: Route, *, request_id: str, key_id: str) -> tuple[Route, str]:
    """(the route narrowed to one side, that side) of a split route; (route, "") otherwise.

    A side without a ready replica (a canary still loading) hands its share to the other one,
    and the request counts for the side that served it: the analysis judges replicas, never a
    share of traffic some other revision answered.
    """
    if route.split is None:
        return route, ""
    side = side_for(route.split, request_id=request_id, key_id=key_id)
    ready = _ready_of(route, side)
    if not ready:
        side = STABLE if side == CANARY else CANARY
        ready = _ready_of(route, side)
    if not ready:
        return route, ""  # neither revision has a ready replica: the usual wait, unmeasured
    return replace(route, ready=ready), side


def _ready_of(route: Route, side: str) -> tuple[ReplicaTarget, ...]:
    assert route.split is not None
    generation = route.split.canary if side == CANARY else route.split.stable
    return tuple(r for r in route.ready if r.generation == generation)


@dataclass
class _Counts:
    requests: int = 0
    errors: int = 0
    first_error: float = 0.0
    latency: list[int] | None = None
    ttft: list[int] | None = None


class TrafficStats:
    """Per-side counters of split routes, batched to Redis."""

    def __init__(self, redis_url: str, timeout: float) -> None:
        self.redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self.pending: dict[tuple[int, str], _Counts] = {}

    def record(self, split: Split, side: str, *, failed: bool, latency: float, ttft: float | None) -> None:
        counts = self.pending.get((split.rollout_id, side))
        if counts is None:
            counts = self.pending[(split.rollout_id, side)] = _Counts(
                latency=[0] * len(BUCKETS), ttft=[0] * len(BUCKETS)
            )
        assert counts.latency is not None and counts.ttft is not None
        counts.requests += 1
        if failed:
            counts.errors += 1
            counts.first_error = counts.first_error or time.time()
        counts.latency[bisect.bisect_left(BUCKETS, latency)] += 1
        if ttft is not None:
            counts.ttft[bisect.bisect_left(BUCKETS, ttft)] += 1

    async def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, {}
        pipe = self.redis.pipeline(transaction=False)
        for (rollout_id, side), counts in pending.items():
            key = stats_key(rollout_id, side)
            pipe.hincrby(key, "n", counts.requests)
            if counts.errors:
                pipe.hincrby(key, "e", counts.errors)
                pipe.hsetnx(key, "first_error", repr(counts.first_error))
            for prefix, buckets in (("l", counts.latency), ("t", counts.ttft)):
                for i, n in enumerate(buckets or ()):
                    if n:
                        pipe.hincrby(key, f"{prefix}{i}", n)
            pipe.expire(key, STATS_TTL_SECONDS)
        try:
            await pipe.execute()
        except Exception as exc:  # measurements are best effort: the canary waits, it is not judged blind
            logger.warning("could not flush canary measurements to Redis: %s", exc)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()

    async def close(self) -> None:
        await self.flush()
        await self.redis.aclose()
