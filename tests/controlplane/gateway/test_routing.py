"""Routing: least-loaded ready replicas, retry on connection failure, 503s, cold starts."""

from __future__ import annotations

import threading
import time

import httpx

from controlplane.audit.models import AuditLog
from controlplane.deployments.choices import Phase, ReplicaState
from controlplane.deployments.models import Deployment
from tests.controlplane.gateway.conftest import auth, metric_value, start_stub
from tests.factories import ReplicaFactory, TenantFactory
from tests.support.ports import free_port
from tests.support.waiting import wait_for

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def post(gateway, token, **extra) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/chat/completions", json={**BODY, **extra}, headers=auth(token), timeout=60)


def test_dead_replica_is_skipped_and_load_is_spread(gateway, make_key, serve_model):
    one, two = start_stub(model="one", latency_ms=50), start_stub(model="two", latency_ms=50)
    try:
        dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
        key, token = make_key()
        serve_model(key.tenant, "m", dead, one.url, two.url)

        answers: list[httpx.Response] = []

        def worker() -> None:
            for _ in range(6):
                answers.append(post(gateway, token))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [a.status_code for a in answers] == [200] * 24
        served_by = [a.json()["model"] for a in answers]
        assert served_by.count("one") >= 6 and served_by.count("two") >= 6
    finally:
        one.stop()
        two.stop()


def test_only_dead_replicas_is_503_with_retry_after(gateway, make_key, serve_model):
    key, token = make_key()
    serve_model(key.tenant, "m", f"http://127.0.0.1:{free_port()}")
    response = post(gateway, token)
    assert response.status_code == 503
    assert response.json()["error"]["message"]
    assert int(response.headers["retry-after"]) >= 1


def test_stopped_or_failed_deployment_is_503_without_waiting(gateway, make_key, serve_model):
    tenant = TenantFactory()
    serve_model(tenant, "m", phase=Phase.FAILED)
    serve_model(tenant, "stopped", phase=Phase.STOPPED, desired_state="stopped")
    _, token = make_key(tenant=tenant)
    started = time.monotonic()
    for model in ("m", "stopped"):
        response = post(gateway, token, model=model)
        assert response.status_code == 503, response.text
        assert "retry-after" in response.headers
    assert time.monotonic() - started < 5
    listed = httpx.get(f"{gateway.url}/v1/models", headers=auth(token)).json()["data"]
    assert listed == []


def test_request_waits_while_a_replica_starts(gateway, stub_upstream, make_key, serve_model):
    key, token = make_key()
    deployment = serve_model(key.tenant, "m", phase=Phase.DEPLOYING, replicas=1)

    served = metric_value(gateway.url, 'hangar_gateway_cold_starts_total{outcome="served"}') or 0.0
    result: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: result.append(post(gateway, token)))
    thread.start()
    # The gateway holds the request (in flight, no replica yet); then the replica comes up.
    wait_for(lambda: metric_value(gateway.url, "hangar_gateway_in_flight_requests") == 1, 15, "the request held")
    ReplicaFactory(deployment=deployment, endpoint=stub_upstream.url, state=ReplicaState.READY)
    thread.join(30)
    assert result and result[0].status_code == 200, result and result[0].text
    assert metric_value(gateway.url, 'hangar_gateway_cold_starts_total{outcome="served"}') == served + 1


def test_deployment_scaled_to_zero_is_woken_and_the_request_held(gateway, stub_upstream, make_key, serve_model):
    key, token = make_key()
    deployment = serve_model(
        key.tenant, "m", autoscale=True, replicas=0, min_replicas=0, max_replicas=2, scale_to_zero_idle_seconds=60
    )
    result: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: result.append(post(gateway, token)))
    thread.start()
    # Play the reconciler: wait for the gateway's scale request, then bring a replica up.
    wait_for(lambda: Deployment.objects.get(pk=deployment.pk).replicas != 0, 15, "the gateway asking for a replica")
    scaled = Deployment.objects.get(pk=deployment.pk)
    assert scaled.replicas == 1
    assert scaled.last_request_at is not None
    assert AuditLog.objects.filter(action="deployment.scale", actor_repr="system:gateway").exists()
    ReplicaFactory(deployment=deployment, endpoint=stub_upstream.url, state=ReplicaState.READY)
    thread.join(30)
    assert result and result[0].status_code == 200, result and result[0].text
