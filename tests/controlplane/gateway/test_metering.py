"""Usage metering writes, the flush on graceful shutdown, and the Prometheus metrics."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from django.db import transaction

from controlplane.deployments.models import Deployment
from controlplane.gateway.services import transaction_committed, usage_flush
from controlplane.usage.models import UsageRecord
from controlplane.usage.services import UsageDelta, usage_record_batch
from tests.controlplane.gateway.conftest import auth, scrape_headers, start_gateway
from tests.support.waiting import wait_for

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def test_usage_batches_add_to_the_minute_row(make_key):
    key, _ = make_key()
    minute = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    delta = UsageDelta(
        tenant_id=key.tenant_id,
        api_key_id=key.pk,
        model="m",
        minute=minute,
        requests=2,
        prompt_tokens=10,
        completion_tokens=5,
        errors=1,
        latency_ms_sum=3.5,
    )
    assert usage_record_batch(deltas=[delta]) == 1
    assert (
        usage_record_batch(
            deltas=[delta, UsageDelta(tenant_id=key.tenant_id, api_key_id=10**9, model="m", minute=minute, requests=1)]
        )
        == 1
    )
    row = UsageRecord.objects.get(api_key=key, model="m", minute=minute)
    assert (row.requests, row.prompt_tokens, row.completion_tokens, row.errors) == (4, 20, 10, 2)
    assert row.latency_ms_sum == pytest.approx(7.0)


def test_a_usage_flush_can_be_confirmed_after_its_answer_is_lost(make_key):
    """The gateway keeps a flush whose commit went unanswered until the database says whether
    its transaction committed (written once, never twice, never lost)."""
    key, _ = make_key()
    minute = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
    delta = UsageDelta(tenant_id=key.tenant_id, api_key_id=key.pk, model="m", minute=minute, requests=2)
    gone = UsageDelta(tenant_id=key.tenant_id, api_key_id=10**9, model="m", minute=minute, requests=1)
    committed: list[int] = []
    assert usage_flush(deltas=[delta, gone], txids=committed) == 1  # a deleted key's row is dropped
    assert len(committed) == 1 and transaction_committed(txid=committed[0]) is True
    rolled_back: list[int] = []
    with pytest.raises(RuntimeError), transaction.atomic():
        usage_flush(deltas=[delta], txids=rolled_back)
        raise RuntimeError("the commit never happened")
    assert len(rolled_back) == 1 and transaction_committed(txid=rolled_back[0]) is False
    assert UsageRecord.objects.get(api_key=key, minute=minute).requests == 2


def test_usage_is_flushed_on_graceful_shutdown(gateway_db_name, stub_upstream, make_key, serve_model):
    key, token = make_key()
    deployment = serve_model(key.tenant, "m", stub_upstream.url)
    # The loop ticks at the shortest period (0.2 s here); usage still waits its own hour.
    env = {"HANGAR_GATEWAY_USAGE_FLUSH_SECONDS": "3600", "HANGAR_GATEWAY_TOUCH_FLUSH_SECONDS": "0.2"}
    server = start_gateway(gateway_db_name, extra_env=env)
    try:
        for _ in range(3):
            assert httpx.post(f"{server.url}/v1/chat/completions", json=BODY, headers=auth(token)).status_code == 200
        # The touch written on a later tick shows the loop ran, and usage was not written with it.
        wait_for(lambda: Deployment.objects.get(pk=deployment.pk).last_request_at is not None, 30, "touch written")
        assert not UsageRecord.objects.filter(api_key=key).exists()
    finally:
        server.stop()  # SIGTERM: uvicorn runs the lifespan shutdown, which flushes
    # (uvicorn re-raises SIGTERM after its graceful shutdown, so the exit code is -15)
    row = UsageRecord.objects.get(api_key=key)
    assert row.requests == 3
    assert row.completion_tokens == 3 * 8


def test_metrics_are_exposed_in_prometheus_text(gateway, stub_upstream, make_key, serve_model):
    key, token = make_key(rpm_limit=600)
    serve_model(key.tenant, "m", stub_upstream.url)
    assert httpx.post(f"{gateway.url}/v1/chat/completions", json=BODY, headers=auth(token)).status_code == 200
    httpx.post(f"{gateway.url}/v1/chat/completions", json={**BODY, "model": "nope"}, headers=auth(token))
    response = httpx.get(f"{gateway.url}/metrics", headers=scrape_headers())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'hangar_gateway_requests_total{model="m",status="200"}' in text
    assert 'hangar_gateway_requests_total{model="-",status="404"}' in text
    assert "hangar_gateway_added_latency_seconds_bucket" in text
    assert 'hangar_gateway_limiter_decisions_total{backend="redis",decision="allowed"}' in text
    assert "hangar_gateway_redis_fallback 0.0" in text
    # The console's other pages still go to Django, with its middleware.
    assert httpx.get(f"{gateway.url}/api/v1/", follow_redirects=False).status_code in (401, 403, 404)
