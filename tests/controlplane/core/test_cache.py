"""Django's cache stores JSON in Redis, never pickle: a value planted in Redis is not code."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.cache import cache

pytestmark = pytest.mark.usefixtures("private_redis_namespace")


class _Planted:
    """What an attacker with write access to Redis would store: unpickling it runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "unpickled"))


def _raw() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def test_values_are_stored_as_json_and_read_back() -> None:
    state = {"at": 1.5, "requests": 3.0, "buckets": {"ttft": [[0.1, 2.0], [float("inf"), 3.0]]}}
    cache.set("scrape-state", state, timeout=60)
    cache.set("counter", 7, timeout=60)
    stored = _raw().get(cache.make_and_validate_key("scrape-state"))
    assert stored is not None
    assert json.loads(stored)["requests"] == 3.0
    assert cache.get("scrape-state") == state
    assert cache.incr("counter") == 8  # ints stay ints in Redis, so incr() stays atomic
    assert cache.add("lock", "1", timeout=60) and not cache.add("lock", "1", timeout=60)


def test_a_value_that_is_not_json_is_refused_when_written() -> None:
    with pytest.raises(TypeError):
        cache.set("object", object(), timeout=60)


def test_a_pickle_planted_in_redis_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Planted(marker))
    pickle.loads(payload)
    assert marker.exists()  # the payload really runs code when unpickled
    marker.unlink()
    _raw().set(cache.make_and_validate_key("scrape-state"), payload, ex=60)
    with pytest.raises(ValueError):  # not JSON: refused, not executed
        cache.get("scrape-state")
    assert not marker.exists()
