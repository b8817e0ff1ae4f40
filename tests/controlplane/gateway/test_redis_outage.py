"""Redis stopped mid-test: keys are still verified from PostgreSQL, limits fall back to the
per-process limiter (said by a metric), no 500, and shared limits resume when Redis returns."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.controlplane.gateway.conftest import auth, metric_value, start_gateway
from tests.support.ports import free_port
from tests.support.processes import Process
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def start_redis(port: int) -> Process:
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis_server = Process(f"redis-{port}", argv).start()
    redis_server.wait_ready(lambda: redis_answers(port), 10, "PONG", interval=0.05)
    return redis_server


def redis_answers(port: int) -> bool:
    return subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() == b"PONG"


def fallback_gauge(url: str) -> float:
    value = metric_value(url, "hangar_gateway_redis_fallback")
    assert value is not None, "no fallback gauge"
    return value


def burst(url: str, token: str, n: int) -> list[int]:
    with httpx.Client(timeout=10) as client:
        return [client.post(f"{url}/v1/chat/completions", json=BODY, headers=auth(token)).status_code for _ in range(n)]


def test_gateway_survives_redis_outage(gateway_db_name, stub_upstream, make_key, serve_model):
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    redis_proc = start_redis(port)
    server = start_gateway(gateway_db_name, redis_url=redis_url)
    try:
        key, token = make_key(rpm_limit=120, burst_percent=10)  # 14 back to back, then one every 60/119 s
        serve_model(key.tenant, "m", stub_upstream.url)
        _, fresh_token = make_key(tenant=key.tenant)  # never seen before the outage

        assert burst(server.url, token, 1) == [200]
        assert fallback_gauge(server.url) == 0

        redis_proc.kill()
        codes = burst(server.url, token, 30)
        assert 500 not in codes and set(codes) <= {200, 429}, codes
        assert fallback_gauge(server.url) == 1
        # The per-process limiter applies the same limit (this is the only gateway process):
        # the bucket of 14, then refusals.
        assert 14 <= codes.count(200) <= 15, codes
        # A key this process never saw is verified from PostgreSQL.
        fresh = burst(server.url, fresh_token, 3)
        assert fresh == [200, 200, 200]
        assert httpx.get(f"{server.url}/v1/models", headers=auth(fresh_token)).status_code == 200

        redis_proc = start_redis(port)
        wait_for(lambda: fallback_gauge(server.url) == 0, 15, "the gateway noticing Redis came back")
        codes = burst(server.url, token, 20)
        # Shared limits again, from an empty Redis: a full bucket of 14 for this key.
        assert 500 not in codes
        assert 14 <= codes.count(200) <= 15, codes
    finally:
        server.stop()
        if redis_proc.poll() is None:
            redis_proc.kill()
