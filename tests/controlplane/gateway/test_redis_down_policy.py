"""The Redis-down policy for limits and budgets (issue 12, item 7), with 3 real gateway
processes on one Redis that is then stopped: ``share`` lets each process admit 1/3 of every
limit and budget (so the three together stay within the configured amounts), ``fail_closed``
refuses every limited request with 503 while keys without limits still serve."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.controlplane.gateway.conftest import RUN_ID, Server, auth, metric_value, start_gateway
from tests.controlplane.gateway.test_redis_outage import start_redis
from tests.support.ports import free_port
from tests.support.processes import Process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PROCESSES = 3


def chat(url: str, token: str, max_tokens: int = 4) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=auth(token), timeout=30)


@pytest.fixture
def redis_server() -> Iterator[tuple[Process, str]]:
    port = free_port()
    server = start_redis(port)
    yield server, f"redis://127.0.0.1:{port}/0"
    if server.poll() is None:
        server.kill()


def start_gateways(db_name: str, redis_url: str, policy: str) -> list[Server]:
    env = {
        "HANGAR_GATEWAY_REDIS_DOWN_POLICY": policy,
        "HANGAR_GATEWAY_PROCESSES": str(PROCESSES),
        "HANGAR_GATEWAY_REDIS_PREFIX": f"hangar:gwtest:{RUN_ID}:{uuid.uuid4().hex[:6]}:",
    }
    servers: list[Server] = []
    try:
        for _ in range(PROCESSES):
            servers.append(start_gateway(db_name, redis_url=redis_url, extra_env=env))
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def in_fallback(server: Server) -> bool:
    return metric_value(server.url, "hangar_gateway_redis_fallback") == 1


def test_share_policy_keeps_three_processes_within_the_limit_and_budget(
    gateway_db_name, redis_server, stub_upstream, make_key, serve_model
):
    redis_proc, redis_url = redis_server
    # 30 RPM with an explicit burst of 100 %: at most 60 in any 60 s. Each of 3 processes alone
    # gets 10 + 10 burst: a bucket of 12, then one every 60.1 / 9 s.
    limited, limited_token = make_key(rpm_limit=30, burst_percent=100)
    serve_model(limited.tenant, "m", stub_upstream.url)
    _, budget_token = make_key(tenant=limited.tenant, monthly_token_budget=900)
    servers = start_gateways(gateway_db_name, redis_url, "share")
    try:
        redis_proc.kill()
        admitted = []
        for server in servers:
            codes = [chat(server.url, limited_token).status_code for _ in range(16)]
            assert set(codes) <= {200, 429}, codes
            admitted.append(codes.count(200))
            assert in_fallback(server)
        print(f"share, Redis down: admitted per process {admitted} (limit 30 + burst 30 in any 60 s)")
        # One process alone would admit 32 back to back, three 96: the share keeps them to 12
        # each (13 if a refill lands during the run), 36-39 together, within the 60 configured.
        assert all(12 <= n <= 13 for n in admitted), admitted
        assert sum(admitted) <= 60

        # The monthly budget of 900 tokens: each process may spend a third of what is left.
        spent = []
        for server in servers:
            tokens = 0
            for _ in range(60):
                answer = chat(server.url, budget_token, max_tokens=50)
                if answer.status_code != 200:
                    assert answer.status_code == 429 and answer.json()["error"]["code"] == "insufficient_quota"
                    break
                tokens += answer.json()["usage"]["total_tokens"]
            else:
                pytest.fail(f"{server.url} never reached its share of the budget")
            spent.append(tokens)
        print(f"share, Redis down: budget tokens spent per process {spent} (budget 900)")
        assert all(tokens > 0 for tokens in spent), spent
        assert sum(spent) <= 900, spent
    finally:
        for server in servers:
            server.stop()


def test_fail_closed_policy_refuses_limited_requests_in_every_process(
    gateway_db_name, redis_server, stub_upstream, make_key, serve_model
):
    redis_proc, redis_url = redis_server
    limited, limited_token = make_key(rpm_limit=600)
    serve_model(limited.tenant, "m", stub_upstream.url)
    _, budget_token = make_key(tenant=limited.tenant, monthly_token_budget=10**6)
    _, free_token = make_key(tenant=limited.tenant)  # no limits and no budget: nothing to check
    servers = start_gateways(gateway_db_name, redis_url, "fail_closed")
    try:
        for server in servers:
            assert chat(server.url, limited_token).status_code == 200
        redis_proc.kill()
        for server in servers:
            for token in (limited_token, budget_token):
                for _ in range(5):
                    refused = chat(server.url, token)
                    assert refused.status_code == 503, refused.text
                    assert refused.json()["error"]["code"] == "limiter_unavailable"
                    assert int(refused.headers["retry-after"]) >= 1
            assert chat(server.url, free_token).status_code == 200
            assert in_fallback(server)
    finally:
        for server in servers:
            server.stop()
