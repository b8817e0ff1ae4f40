"""The metrics scraper: parsing the runtime's exposition, rates and quantiles from deltas,
stored samples and rollups, pruning, and the live push to websocket groups."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.utils import timezone

from controlplane.core.realtime import deployment_group, tenant_group
from controlplane.deployments.models import MetricSample
from controlplane.deployments.replica_auth import replica_token
from tests.factories import DeploymentFactory, ReplicaFactory
from workers import metrics
from workers.runtime.metrics import RuntimeMetrics

pytestmark = pytest.mark.usefixtures("private_redis_namespace")  # groups of this test only


def exposition(
    *, completion: int, prompt: int = 0, ok: int = 0, failed: int = 0, ttft: list[float] = (), e2e: list[float] = ()
) -> RuntimeMetrics:
    m = RuntimeMetrics()
    m.completion_tokens.inc(completion)
    m.prompt_tokens.inc(prompt)
    if ok:
        m.requests.labels(status="200").inc(ok)
    if failed:
        m.requests.labels(status="503").inc(failed)
    m.requests.labels(status="400").inc(1)  # a client error is not a server error
    m.in_flight.set(3)
    m.queue_depth.set(1)
    m.batch_size.set(2)
    for value in ttft:
        m.time_to_first_token.observe(value)
    for value in e2e:
        m.e2e_latency.observe(value)
    return m


def test_parse_the_runtime_exposition() -> None:
    text = exposition(completion=500, prompt=40, ok=9, failed=1, ttft=[0.02] * 4, e2e=[0.3, 0.7]).render().decode()
    scrape = metrics.parse_metrics(text, at=100.0)
    assert (scrape.completion_tokens, scrape.prompt_tokens) == (500, 40)
    assert (scrape.requests, scrape.errors) == (11, 1)
    assert (scrape.in_flight, scrape.queued, scrape.batch_size) == (3, 1, 2)
    assert scrape.memory_bytes > 0
    assert scrape.buckets["ttft"][-1] == (float("inf"), 4)
    assert set(scrape.buckets) == {"ttft", "e2e", "itl"}


def test_histogram_quantile_interpolates_like_promql() -> None:
    buckets = [(0.1, 0.0), (0.5, 50.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert metrics.histogram_quantile(0.5, buckets) == pytest.approx(0.5)
    assert metrics.histogram_quantile(0.25, buckets) == pytest.approx(0.3)
    assert metrics.histogram_quantile(0.95, buckets) == pytest.approx(0.95)
    assert metrics.histogram_quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None
    assert metrics.histogram_quantile(0.99, [(1.0, 1.0), (float("inf"), 10.0)]) == 1.0


def test_rates_and_quantiles_come_from_deltas_and_survive_a_restart() -> None:
    before = metrics.parse_metrics(exposition(completion=1000, e2e=[5.0] * 100).render().decode(), at=10.0)
    after = metrics.parse_metrics(exposition(completion=1400, e2e=[5.0] * 100 + [0.2] * 10).render().decode(), at=12.0)
    win = metrics.window(after, before)
    assert win is not None
    assert win.tokens_per_second == pytest.approx(200.0)
    q = metrics.quantiles(win.buckets)
    assert 0.1 < q["latency_p50"] <= 0.25  # only the 10 new fast requests count, not the old slow ones
    restarted = metrics.parse_metrics(exposition(completion=50).render().decode(), at=14.0)
    assert metrics.window(restarted, after).tokens_per_second == pytest.approx(25.0)


@pytest.mark.django_db(transaction=True)
def test_scrape_once_stores_samples_rollups_prunes_and_pushes(monkeypatch: Any, settings: Any) -> None:
    settings.HANGAR_METRICS_RETENTION_SECONDS = 600
    deployment = DeploymentFactory(phase="Running", ready_replicas=2, progress={"step": "ready"})
    a = ReplicaFactory(deployment=deployment, state="ready", endpoint="http://127.0.0.1:9001")
    b = ReplicaFactory(deployment=deployment, state="ready", endpoint="http://127.0.0.1:9002")
    starting = ReplicaFactory(deployment=deployment, state="starting", endpoint="")
    old = MetricSample.objects.create(
        tenant=deployment.tenant, deployment=deployment, ts=timezone.now() - timedelta(seconds=601)
    )
    counters = {a.pk: [0, 100], b.pk: [0, 300]}
    tick = {"n": 0, "at": 1000.0}

    async def fake_fetch(
        urls: dict[int, str], request_timeout: float, *, tokens: dict[int, str]
    ) -> dict[int, tuple[str, float]]:
        assert set(urls) == {a.pk, b.pk}  # only ready replicas with an endpoint are scraped
        assert urls[a.pk] == "http://127.0.0.1:9001/metrics"
        # Replicas answer /metrics only to their deployment's credential.
        assert tokens == {a.pk: replica_token(deployment.pk), b.pk: replica_token(deployment.pk)}
        n = tick["n"]
        out = {}
        for pk, values in counters.items():
            m = exposition(completion=values[n], ok=10 * n, failed=n, e2e=[0.3] * (10 * n))
            out[pk] = (m.render().decode(), tick["at"] + 2 * n)
        return out

    monkeypatch.setattr(metrics, "fetch_all", fake_fetch)
    from django.core.cache import cache

    cache.delete_many([metrics.STATE_KEY.format(a.pk), metrics.STATE_KEY.format(b.pk)])

    layer = get_channel_layer()
    channel, tenant_channel = asyncio.run(_subscribe(layer, deployment))

    first = metrics.scrape_once()
    assert first["replicas"] == 2 and first["samples"] == 3 and first["pruned"] == 1
    assert not MetricSample.objects.filter(pk=old.pk).exists()
    tick["n"] = 1
    metrics.scrape_once()
    rollup = MetricSample.objects.filter(deployment=deployment, replica__isnull=True).order_by("-ts").first()
    assert rollup.tokens_per_second == pytest.approx((100 + 300) / 2)
    assert rollup.in_flight == 6
    assert 0.25 <= rollup.latency_p50 <= 0.5
    per_replica = MetricSample.objects.filter(replica=b).order_by("-ts").first()
    assert per_replica.tokens_per_second == pytest.approx(150.0)

    messages = asyncio.run(_drain(layer, channel))
    assert [m["type"] for m in messages] == ["push", "push"]
    latest = messages[-1]["payload"]
    assert latest["kind"] == "metrics" and latest["deployment"] == deployment.pk
    assert latest["tokens_per_second"] == pytest.approx(200.0)
    assert latest["error_rate"] == pytest.approx(2 / 22)  # 5xx only; two 400s do not count
    assert latest["phase"] == "Running" and latest["progress"] == {"step": "ready"}
    assert {r["id"]: r["state"] for r in latest["replicas"]} == {a.pk: "ready", b.pk: "ready", starting.pk: "starting"}
    tenant_messages = asyncio.run(_drain(layer, tenant_channel))
    assert "replicas" not in tenant_messages[-1]["payload"]  # the tenant stream is slim


async def _subscribe(layer: Any, deployment: Any) -> tuple[str, str]:
    """Channels in the deployment's group and in its tenant's group."""
    channel = await layer.new_channel()
    tenant_channel = await layer.new_channel()
    await layer.group_add(deployment_group(deployment.pk), channel)
    await layer.group_add(tenant_group(deployment.tenant_id), tenant_channel)
    return channel, tenant_channel


async def _drain(layer: Any, name: str) -> list[dict[str, Any]]:
    """Every message waiting on the channel (none more within half a second)."""
    got = []
    while True:
        try:
            got.append(await asyncio.wait_for(layer.receive(name), timeout=0.5))
        except TimeoutError:
            return got


@pytest.mark.django_db(transaction=True)
def test_deployments_without_ready_replicas_still_push_progress(monkeypatch: Any) -> None:
    deployment = DeploymentFactory(phase="Deploying", progress={"step": "loading_model", "detail": "reading weights"})
    ReplicaFactory(deployment=deployment, state="starting")
    pushed: list[Any] = []
    monkeypatch.setattr(metrics, "push", lambda payloads: pushed.extend(payloads))
    metrics.scrape_once()
    (payload,) = [p for d, p in pushed if d.pk == deployment.pk]
    assert payload["kind"] == "deployment"
    assert payload["progress"]["detail"] == "reading weights"
    assert payload["replica_rows"][0]["state"] == "starting"


@pytest.mark.django_db
def test_overlapping_passes_are_skipped(monkeypatch: Any) -> None:
    from django.core.cache import cache

    calls = []
    monkeypatch.setattr(metrics, "scrape_once", lambda: calls.append(1) or {"replicas": 0})
    cache.delete(metrics.LOCK_KEY)
    assert metrics.scrape_with_lock() == {"replicas": 0}
    cache.add(metrics.LOCK_KEY, "1", timeout=5)
    assert metrics.scrape_with_lock() is None
    cache.delete(metrics.LOCK_KEY)
    assert calls == [1]


@pytest.mark.django_db
def test_the_celery_task_runs_a_pass(monkeypatch: Any) -> None:
    from workers.metrics_tasks import scrape_metrics

    monkeypatch.setattr(metrics, "scrape_once", lambda: {"replicas": 0, "samples": 0, "pruned": 0, "pushed": 0})
    assert scrape_metrics.name == "workers.metrics_tasks.scrape_metrics"
    assert scrape_metrics.apply().get() == {"replicas": 0, "samples": 0, "pruned": 0, "pushed": 0}
