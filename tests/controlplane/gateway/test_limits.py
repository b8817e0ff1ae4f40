"""Rate limits and budgets: accuracy under concurrency, TPM reservation and settlement, budgets."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import httpx
import pytest
import redis
from django.conf import settings

from controlplane.gateway.conf import load
from controlplane.gateway.limits import Limiter, LocalLimiter, plan
from controlplane.gateway.selectors import KeyRecord
from tests.controlplane.gateway.conftest import RUN_ID, auth, metric_value, start_stub
from tests.factories import TenantFactory, UsageRecordFactory
from tests.support.waiting import wait_for, wait_for_async

pytestmark = pytest.mark.slow


def body(max_tokens: int = 4, model: str = "m") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}


async def hammer(url: str, token: str, clients: int, seconds: float) -> list[tuple[float, float, int]]:
    """``clients`` closed-loop clients for ``seconds``: (sent, answered, status) per request."""
    results: list[tuple[float, float, int]] = []
    stop_at = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            while time.monotonic() < stop_at:
                sent = time.monotonic()
                async with session.post(f"{url}/v1/chat/completions", json=body(), headers=auth(token)) as response:
                    await response.read()
                    results.append((sent, time.monotonic(), response.status))

        await asyncio.gather(*(client() for _ in range(clients)))
    return results


def test_rpm_limit_is_accurate_under_concurrency_without_edge_bursts(gateway, stub_upstream, make_key, serve_model):
    rpm = 600  # no burst allowance: two back to back, then one every 60/599 s
    key, token = make_key(rpm_limit=rpm)
    bucket = plan(key_record(rpm=rpm), 1, time.time())[0][0]
    serve_model(key.tenant, "m", stub_upstream.url)
    # Warm the key and routing caches without spending a request, so that the clock below
    # starts when requests actually reach the limiter.
    assert httpx.get(f"{gateway.url}/v1/models", headers=auth(token)).status_code == 200
    results = asyncio.run(hammer(gateway.url, token, clients=16, seconds=6.0))
    statuses = {s for _, _, s in results}
    assert statuses <= {200, 429}, statuses
    first_sent = min(sent for sent, _, _ in results)
    last_sent = max(sent for sent, _, _ in results)
    expected = bucket.capacity + math.floor((last_sent - first_sent) / (bucket.interval_ms / 1000))
    admitted = sorted(done for _, done, s in results if s == 200)
    print(f"rpm accuracy: admitted {len(admitted)} of {len(results)}, expected {expected}")
    # Never more than the limit allows. Fewer only when the gateway or the clients stall (a shared
    # CPU): credit beyond the bucket's capacity is not kept, by design, so a stalled second is lost.
    # The 3-minute test in test_rate_limit_minutes.py holds the long-run count to 1 %.
    assert len(admitted) <= expected + max(2, 0.02 * expected), (len(admitted), expected, len(results))
    assert len(admitted) >= 0.6 * expected, (len(admitted), expected, len(results))
    # After the initial burst, no one-second window holds more than the steady rate (+1 for edges).
    steady = [t for t in admitted if t > first_sent + 1.0]
    for i, start in enumerate(steady):
        in_window = sum(1 for t in steady[i:] if t < start + 1.0)
        assert in_window <= rpm / 60 + 2, (in_window, start - first_sent)


def test_throttled_answers_carry_openai_error_retry_after_and_ratelimit_headers(
    gateway, stub_upstream, make_key, serve_model
):
    # An explicit burst: 3 more in any 60 s window (30 % of 10). The bucket holds burst + 2 = 5,
    # then refills one every 60.1 / 9 s: at most 13 in any 60 s.
    key, token = make_key(rpm_limit=10, burst_percent=30)
    serve_model(key.tenant, "m", stub_upstream.url)
    answers = [httpx.post(f"{gateway.url}/v1/chat/completions", json=body(), headers=auth(token)) for _ in range(6)]
    assert [a.status_code for a in answers[:5]] == [200] * 5
    assert answers[0].headers["x-ratelimit-limit"] == "13"
    assert answers[0].headers["x-ratelimit-remaining"] == "4"
    assert int(answers[4].headers["x-ratelimit-remaining"]) == 0
    throttled = answers[5]
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "rate_limit_exceeded"
    assert throttled.json()["error"]["type"] == "requests"
    assert int(throttled.headers["retry-after"]) >= 1
    assert "limit 10 (+3 burst)" in throttled.json()["error"]["message"]
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
        assert name in throttled.headers
    # Without a burst allowance the header says the plain limit, and the 61st request in a
    # minute is never admitted (the 60 s windows are checked in test_rate_limit_minutes).
    _, plain = make_key(tenant=key.tenant, rpm_limit=10)
    first = httpx.post(f"{gateway.url}/v1/chat/completions", json=body(), headers=auth(plain))
    assert first.headers["x-ratelimit-limit"] == "10" and first.headers["x-ratelimit-remaining"] == "1"


def test_tenant_limit_is_shared_by_its_keys(gateway, stub_upstream, make_key, serve_model):
    tenant = TenantFactory(rpm_limit=6)  # no burst: 2 back to back, then one every 60.1 / 5 s
    serve_model(tenant, "m", stub_upstream.url)
    _, one = make_key(tenant=tenant)
    _, two = make_key(tenant=tenant)
    codes = [
        httpx.post(f"{gateway.url}/v1/chat/completions", json=body(), headers=auth(token)).status_code
        for token in (one, two) * 4
    ]
    assert codes.count(200) == 2 and codes[2:] == [429] * 6
    refused = httpx.post(f"{gateway.url}/v1/chat/completions", json=body(), headers=auth(two))
    assert "tenant" in refused.json()["error"]["message"]


def test_tokens_are_reserved_at_admission_and_settled_afterwards(gateway, make_key, serve_model):
    slow = start_stub(latency_ms=1500, tokens=8)
    try:
        key, token = make_key(tpm_limit=6000)  # 100 tokens/s, no burst allowance
        serve_model(key.tenant, "m", slow.url)

        async def two_at_once() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
                first = asyncio.ensure_future(client.post("/v1/chat/completions", json=body(500), headers=auth(token)))
                # The first is admitted (its tokens reserved) once the gateway proxies it.
                await wait_for_async(
                    lambda: asyncio.to_thread(metric_value, gateway.url, "hangar_gateway_in_flight_requests"),
                    10,
                    "the first request in flight",
                    interval=0.02,
                )
                second = await client.post("/v1/chat/completions", json=body(500), headers=auth(token))
                return [await first, second]

        first, second = asyncio.run(two_at_once())
        # The first reserved ~505 tokens while it ran, so the second did not fit.
        assert first.status_code == 200
        assert 0 <= int(first.headers["x-ratelimit-remaining-tokens"]) <= 100
        assert second.status_code == 429
        assert second.json()["error"]["type"] == "tokens"
        # The first used only ~20 tokens; once settled (batched to Redis within 50 ms) the same
        # request fits again. A refusal reserves nothing, so asking until it fits changes nothing.
        wait_for(
            lambda: httpx.post(
                f"{gateway.url}/v1/chat/completions", json=body(500), headers=auth(token), timeout=30
            ).status_code
            == 200,
            5,
            "the settled request fitting again",
        )
        # A request that could never fit is refused as too large, not queued forever.
        small, small_token = make_key(tenant=key.tenant, tpm_limit=500)
        huge = httpx.post(f"{gateway.url}/v1/chat/completions", json=body(600), headers=auth(small_token))
        assert huge.status_code == 429
        assert "too large" in huge.json()["error"]["message"]
    finally:
        slow.stop()


def budget_used(key: Any) -> int:
    """The key's monthly budget counter in Redis, as this session's gateways name it."""
    with redis.Redis.from_url(settings.REDIS_URL) as client:
        names = list(client.scan_iter(f"hangar:gwtest:{RUN_ID}:k:{key.key_id}:budget:*"))
        return sum(int(client.get(name) or 0) for name in names)


def test_monthly_budget_is_rebuilt_from_usage_and_enforced(gateway, stub_upstream, make_key, serve_model):
    key, token = make_key(monthly_token_budget=1000)
    serve_model(key.tenant, "m", stub_upstream.url)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    UsageRecordFactory(
        tenant=key.tenant, api_key=key, model="m", minute=now, requests=9, prompt_tokens=900, completion_tokens=50
    )

    def post(max_tokens: int) -> httpx.Response:
        return httpx.post(f"{gateway.url}/v1/chat/completions", json=body(max_tokens), headers=auth(token))

    refused = post(100)  # 950 used (rebuilt from UsageRecord) + ~105 reserved > 1000
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert post(40).status_code == 200  # 950 + ~45 fits; settles at ~20 actual tokens
    # Settlement replaces the ~45 reserved with the actual count, batched to Redis: wait for it.
    wait_for(lambda: 950 < budget_used(key) < 990, 10, "the budget settled at the actual tokens")
    assert post(40).status_code == 429  # ~970 + ~45 does not


# ----------------------------------------------------------------------------- limiter unit


def key_record(**limits: int) -> KeyRecord:
    return KeyRecord(
        pk=1,
        key_id=uuid.uuid4().hex[:12],
        digest="",
        tenant_id=10**9,
        scopes=frozenset(),
        allowed_models=frozenset(),
        rpm_limit=limits.get("rpm", 0),
        tpm_limit=limits.get("tpm", 0),
        monthly_token_budget=0,
        burst_percent=limits.get("burst_percent", 0),
        expires_at=None,
        revoked=False,
        tenant_rpm_limit=0,
        tenant_tpm_limit=0,
        tenant_monthly_token_budget=0,
        tenant_burst_percent=0,
    )


async def test_tpm_reservation_and_settlement_in_redis() -> None:
    conf = replace(load(), redis_prefix=f"hangar:gwtest:{uuid.uuid4().hex[:8]}:")
    limiter = Limiter(conf, settings.REDIS_URL)
    sync = redis.Redis.from_url(settings.REDIS_URL)
    key = key_record(tpm=6000, burst_percent=10)  # 10 ms per token, explicit burst allowance 600 tokens
    bucket = plan(key, 1, time.time(), conf.redis_prefix)[0][0].key

    def debt_ms() -> float:
        seconds, micros = sync.time()
        return float(sync.get(bucket)) - (seconds * 1000 + micros / 1000)

    try:
        decision = await limiter.admit(key, 500)
        assert decision.allowed
        assert 4900 < debt_ms() <= 5000  # 500 tokens reserved
        limiter.settle(decision.reservation, 120)
        await limiter.flush_settlements()
        assert 1100 < debt_ms() <= 1200  # settled to the 120 actually used
        assert not (await limiter.admit(key, 550)).allowed  # would need 1200 ms of headroom beyond burst
        assert (await limiter.admit(key, 50)).allowed
        too_large = await limiter.admit(key, 6001)
        assert not too_large.allowed and too_large.reason == "too_large"
    finally:
        await limiter.close()
        sync.close()


def test_local_limiter_applies_the_same_gcra() -> None:
    buckets, budgets = plan(key_record(rpm=600), 1, time.time())
    local = LocalLimiter()
    assert sum(1 for _ in range(100) if local.admit(buckets, budgets)[0] == 0) == 2  # no burst: 2 back to back
    buckets, budgets = plan(key_record(rpm=600, burst_percent=10), 1, time.time())
    local = LocalLimiter()
    assert sum(1 for _ in range(100) if local.admit(buckets, budgets)[0] == 0) == 62  # burst 60 + 2
