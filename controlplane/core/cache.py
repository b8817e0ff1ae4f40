"""A serializer for Django's Redis cache that never unpickles.

Django's ``RedisSerializer`` pickles every value that is not an int, and unpickles whatever it
reads back: anyone who can write to Redis (a leaked Redis password, a shared Redis, another
tenant's replica on a flat network) could then run code in every web and worker process that
reads the cache. Hangar caches only plain data (locks, markers, the scraper's counters), so the
cache stores JSON; a value that is not JSON is refused when written and when read.
"""

from __future__ import annotations

import json
from typing import Any


class JSONSerializer:
    """``dumps``/``loads`` for ``django.core.cache.backends.redis.RedisCacheClient``."""

    def __init__(self, protocol: int | None = None) -> None:
        del protocol  # accepted for the interface Django calls; pickle's protocol means nothing here

    def dumps(self, obj: Any) -> int | bytes:
        # Plain ints stay ints, as in Django's own serializer, so incr() and decr() stay atomic.
        if type(obj) is int:
            return obj
        return json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()

    def loads(self, data: bytes) -> Any:
        try:
            return int(data)
        except ValueError:
            return json.loads(data)
