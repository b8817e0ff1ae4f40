"""Scrape every ready replica's ``/metrics``, store samples, prune old ones, push them live.

One pass (``scrape_once``) every ``HANGAR_METRICS_INTERVAL`` seconds (Celery beat →
``workers.metrics_tasks.scrape_metrics``):

1. read the ready replicas with an endpoint, fetch their Prometheus text concurrently with a
   short timeout (a hung replica costs one timeout, not the whole pass), presenting each
   deployment's replica token (``controlplane.deployments.replica_auth``);
2. turn counters into rates and histograms into quantiles using the *difference* from the
   previous scrape of the same replica (kept in the cache: losing it only costs one point),
   treating a counter that went down as a restarted replica (Prometheus ``rate`` semantics);
3. write one ``MetricSample`` per replica plus one deployment-level rollup row (``replica``
   empty) whose rates add up the replicas and whose quantiles come from the merged buckets;
4. delete samples older than ``HANGAR_METRICS_RETENTION_SECONDS``;
5. push ``{"kind": "metrics", ...}`` to the deployment's and the tenant's websocket groups.

The runtime's metric names are a contract documented in ``workers/runtime/metrics.py``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from controlplane.core.realtime import deployment_group, tenant_group
from controlplane.deployments.choices import DesiredState, Phase, ReplicaState
from controlplane.deployments.models import Deployment, MetricSample, Replica
from controlplane.deployments.replica_auth import replica_token

logger = logging.getLogger(__name__)

PREFIX = "hangar_runtime_"
HISTOGRAMS = {
    "ttft": PREFIX + "time_to_first_token_seconds",
    "e2e": PREFIX + "e2e_latency_seconds",
    "itl": PREFIX + "inter_token_latency_seconds",
}
STATE_KEY = "hangar:metrics:replica:{}"
LOCK_KEY = "hangar:metrics:lock"
MAX_CONCURRENT_SCRAPES = 64
MAX_METRICS_BYTES = 1024 * 1024


# ----------------------------------------------------------------------------- parsing


@dataclass
class Scrape:
    """The parts of one replica's exposition that the dashboard uses."""

    at: float
    requests: float = 0.0
    errors: float = 0.0
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    in_flight: float = 0.0
    queued: float = 0.0
    batch_size: float = 0.0
    memory_bytes: float = 0.0
    # histogram key -> cumulative [(upper bound, count)] sorted by bound, +Inf last
    buckets: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def state(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "buckets": {k: [list(b) for b in v] for k, v in self.buckets.items()},
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Scrape:
        return cls(
            at=data["at"],
            requests=data["requests"],
            errors=data["errors"],
            prompt_tokens=data["prompt_tokens"],
            completion_tokens=data["completion_tokens"],
            buckets={k: [(float(le), float(c)) for le, c in v] for k, v in data.get("buckets", {}).items()},
        )


def is_error_status(status: str) -> bool:
    """Server-side failures count as errors; a client's bad request or hang-up (4xx, 499) does not."""
    return status.startswith("5")


# Samples whose value a scrape takes as it is: metric name -> Scrape attribute.
LAST_VALUE = {
    PREFIX + "prompt_tokens_total": "prompt_tokens",
    PREFIX + "completion_tokens_total": "completion_tokens",
    PREFIX + "requests_in_flight": "in_flight",
    PREFIX + "queue_depth": "queued",
    PREFIX + "batch_size": "batch_size",
}
BUCKET_OF = {name + "_bucket": key for key, name in HISTOGRAMS.items()}


def parse_metrics(text: str, *, at: float) -> Scrape:
    scrape = Scrape(at=at)
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            _take(scrape, buckets, sample.name, sample.labels, float(sample.value))
    scrape.buckets = {key: sorted(values) for key, values in buckets.items()}
    return scrape


def _take(
    scrape: Scrape, buckets: dict[str, list[tuple[float, float]]], name: str, labels: dict[str, str], value: float
) -> None:
    """Fold one sample into the scrape (or the histogram buckets); samples the dashboard ignores are skipped."""
    if name in LAST_VALUE:
        setattr(scrape, LAST_VALUE[name], value)
    elif name == PREFIX + "requests_total":
        scrape.requests += value
        if is_error_status(labels.get("status", "")):
            scrape.errors += value
    elif name == PREFIX + "memory_bytes":
        # RSS on CPU; on CUDA the allocated GPU memory is what operators watch.
        if labels.get("kind") in ("rss", "gpu_allocated", None):
            scrape.memory_bytes = max(scrape.memory_bytes, value)
    elif name in BUCKET_OF:
        buckets[BUCKET_OF[name]].append((float(labels["le"]), value))


# ----------------------------------------------------------------------------- arithmetic


def counter_delta(now: float, before: float) -> float:
    """Increase of a counter; a counter that went down was reset (replica restarted)."""
    return now - before if now >= before else now


def bucket_delta(now: list[tuple[float, float]], before: list[tuple[float, float]] | None) -> list[tuple[float, float]]:
    if not before or [le for le, _ in now] != [le for le, _ in before]:
        return list(now) if before is None else []
    deltas = [(le, c - p) for (le, c), (_, p) in zip(now, before, strict=True)]
    if any(d < 0 for _, d in deltas):  # reset: everything in ``now`` is new
        return list(now)
    return deltas


def merge_buckets(series: Iterable[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    merged: dict[float, float] = defaultdict(float)
    for buckets in series:
        for le, count in buckets:
            merged[le] += count
    return sorted(merged.items())


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Like PromQL's ``histogram_quantile``: linear interpolation inside the bucket holding rank q."""
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(le):
                return lower
            if cumulative == below:
                return le
            return lower + (le - lower) * (rank - below) / (cumulative - below)
        lower, below = le, cumulative
    return lower


@dataclass
class Window:
    """What happened on one replica between two scrapes."""

    seconds: float
    requests: float
    errors: float
    prompt_tokens: float
    completion_tokens: float
    buckets: dict[str, list[tuple[float, float]]]

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


def window(now: Scrape, before: Scrape | None) -> Window | None:
    if before is None or now.at <= before.at:
        return None
    return Window(
        seconds=now.at - before.at,
        requests=counter_delta(now.requests, before.requests),
        errors=counter_delta(now.errors, before.errors),
        prompt_tokens=counter_delta(now.prompt_tokens, before.prompt_tokens),
        completion_tokens=counter_delta(now.completion_tokens, before.completion_tokens),
        buckets={key: bucket_delta(b, before.buckets.get(key)) for key, b in now.buckets.items()},
    )


def quantiles(buckets: dict[str, list[tuple[float, float]]]) -> dict[str, float | None]:
    return {
        "ttft_p50": histogram_quantile(0.5, buckets.get("ttft", [])),
        "latency_p50": histogram_quantile(0.5, buckets.get("e2e", [])),
        "latency_p95": histogram_quantile(0.95, buckets.get("e2e", [])),
    }


# ----------------------------------------------------------------------------- fetching


async def fetch_one(
    client: httpx.AsyncClient, url: str, token: str, limit: asyncio.Semaphore
) -> tuple[str | None, float]:
    async with limit:
        try:
            response = await client.get(url, headers={"Authorization": f"Bearer {token}"})
            at = time.time()
            if response.status_code != 200 or len(response.content) > MAX_METRICS_BYTES:
                return None, at
            return response.text, at
        except httpx.HTTPError as exc:
            logger.debug("scrape of %s failed: %s", url, exc)
            return None, time.time()


async def fetch_all(
    urls: dict[int, str], request_timeout: float, *, tokens: dict[int, str]
) -> dict[int, tuple[str | None, float]]:
    """``/metrics`` text (None on failure) and the time it was read, by key of ``urls``;
    ``tokens`` holds the bearer token to present for each key."""
    limit = asyncio.Semaphore(MAX_CONCURRENT_SCRAPES)
    async with httpx.AsyncClient(timeout=request_timeout, follow_redirects=False) as client:
        keys = list(urls)
        results = await asyncio.gather(*(fetch_one(client, urls[k], tokens[k], limit) for k in keys))
    return dict(zip(keys, results, strict=True))


def metrics_url(endpoint: str) -> str:
    return endpoint.rstrip("/") + "/metrics"


# ----------------------------------------------------------------------------- one pass


def _replica_row(replica: Replica, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": replica.pk,
        "name": replica.name,
        "state": replica.state,
        "endpoint": replica.endpoint,
        "last_error": replica.last_error,
    } | (extra or {})


def _replica_figures(scraped: tuple[Scrape, Window | None] | None) -> dict[str, Any]:
    if scraped is None:
        return {"tokens_per_second": None, "in_flight": None}
    scrape, win = scraped
    return {"tokens_per_second": win.tokens_per_second if win else None, "in_flight": scrape.in_flight}


def _live_deployments() -> list[Deployment]:
    """Deployments whose dashboards want updates: running, or still on their way somewhere."""
    return list(
        Deployment.objects.filter(
            Q(desired_state=DesiredState.RUNNING) | ~Q(phase__in=[Phase.STOPPED, Phase.FAILED])
        ).exclude(desired_state=DesiredState.DELETED, phase=Phase.DELETING)
    )


@dataclass(frozen=True)
class Targets:
    """What one pass looks at: the live deployments, all their replicas, and the ready ones to scrape."""

    deployments: dict[int, Deployment]
    replicas: list[Replica]
    ready: list[Replica]

    def replicas_of(self, deployment_id: int) -> list[Replica]:
        return [r for r in self.replicas if r.deployment_id == deployment_id]


@dataclass(frozen=True)
class Reading:
    """One replica's scrape, and what happened on it since the previous one (None: no previous one)."""

    replica: Replica
    scrape: Scrape
    window: Window | None


@dataclass(frozen=True)
class Rollup:
    """A deployment's figures over its scraped replicas: rates add up, quantiles come from merged buckets."""

    total: Scrape
    windows: list[Window]
    quantiles: dict[str, float | None]
    tokens_per_second: float
    error_rate: float | None


def scrape_once() -> dict[str, int]:
    """One scrape of every ready replica; returns counts for logs and tests."""
    interval = float(settings.HANGAR_METRICS_INTERVAL)
    targets = select_targets()
    fetched = fetch(targets.ready, request_timeout=max(0.5, interval))
    readings = read(targets.ready, fetched)
    now_dt = timezone.now()
    rows = [replica_sample(targets, reading, now_dt) for reading in readings]
    payloads: list[tuple[Deployment, dict[str, Any]]] = []
    for deployment_id, items in by_deployment(readings).items():
        deployment = targets.deployments[deployment_id]
        rollup = roll_up(items)
        rows.append(rollup_sample(deployment, rollup, now_dt))
        payloads.append((deployment, metrics_payload(deployment, targets, items, rollup, now_dt)))
    # Deployments without a scraped replica still get their phase, progress and replica table.
    scraped = {r.replica.deployment_id for r in readings}
    payloads += [(d, deployment_payload(d, targets)) for pk, d in targets.deployments.items() if pk not in scraped]
    store(rows, readings, interval=interval)
    pruned = prune()
    push(payloads)
    return {"replicas": len(targets.ready), "samples": len(rows), "pruned": pruned, "pushed": len(payloads)}


def select_targets() -> Targets:
    deployments = {d.pk: d for d in _live_deployments()}
    replicas = list(Replica.objects.filter(deployment_id__in=deployments).order_by("deployment_id", "name"))
    ready = [r for r in replicas if r.state == ReplicaState.READY and r.endpoint]
    return Targets(deployments, replicas, ready)


def fetch(ready: list[Replica], *, request_timeout: float) -> dict[int, tuple[str | None, float]]:
    """Each replica's ``/metrics`` text (None on failure) and when it was read, by replica id."""
    tokens = {d: replica_token(d) for d in {r.deployment_id for r in ready}}
    return asyncio.run(
        fetch_all(
            {r.pk: metrics_url(r.endpoint) for r in ready},
            request_timeout=request_timeout,
            tokens={r.pk: tokens[r.deployment_id] for r in ready},
        )
    )


def read(ready: list[Replica], fetched: dict[int, tuple[str | None, float]]) -> list[Reading]:
    """Parse what was fetched; the window against each replica's previous scrape (kept in the cache)."""
    previous_states = cache.get_many([STATE_KEY.format(r.pk) for r in ready])
    readings = []
    for replica in ready:
        text, at = fetched.get(replica.pk, (None, 0.0))
        if text is None:
            continue
        try:
            scrape = parse_metrics(text, at=at)
        except ValueError as exc:
            logger.info("replica %s served unparsable metrics: %s", replica.pk, exc)
            continue
        state = previous_states.get(STATE_KEY.format(replica.pk))
        before = Scrape.from_state(state) if isinstance(state, dict) else None
        readings.append(Reading(replica, scrape, window(scrape, before)))
    return readings


def by_deployment(readings: list[Reading]) -> dict[int, list[Reading]]:
    grouped: dict[int, list[Reading]] = defaultdict(list)
    for reading in readings:
        grouped[reading.replica.deployment_id].append(reading)
    return dict(grouped)


def roll_up(readings: list[Reading]) -> Rollup:
    scrapes = [r.scrape for r in readings]
    windows = [r.window for r in readings if r.window is not None]
    merged = {key: merge_buckets(w.buckets.get(key, []) for w in windows) for key in ("ttft", "e2e")}
    requests = sum(w.requests for w in windows)
    return Rollup(
        total=Scrape(
            at=time.time(),
            requests=sum(s.requests for s in scrapes),
            errors=sum(s.errors for s in scrapes),
            prompt_tokens=sum(s.prompt_tokens for s in scrapes),
            completion_tokens=sum(s.completion_tokens for s in scrapes),
            in_flight=sum(s.in_flight for s in scrapes),
            queued=sum(s.queued for s in scrapes),
            batch_size=sum(s.batch_size for s in scrapes),
            memory_bytes=sum(s.memory_bytes for s in scrapes),
        ),
        windows=windows,
        quantiles=quantiles(merged) if windows else {},
        tokens_per_second=sum(w.tokens_per_second for w in windows),
        error_rate=(sum(w.errors for w in windows) / requests) if requests > 0 else None,
    )


def replica_sample(targets: Targets, reading: Reading, ts: datetime) -> MetricSample:
    deployment = targets.deployments[reading.replica.deployment_id]
    q = quantiles(reading.window.buckets) if reading.window else {}
    return _sample(deployment, ts, reading.scrape, reading.window, q, replica=reading.replica)


def rollup_sample(deployment: Deployment, rollup: Rollup, ts: datetime) -> MetricSample:
    """The deployment-level row (``replica`` empty)."""
    sample = _sample(deployment, ts, rollup.total, None, rollup.quantiles, replica=None)
    sample.tokens_per_second = rollup.tokens_per_second
    return sample


def metrics_payload(
    deployment: Deployment, targets: Targets, readings: list[Reading], rollup: Rollup, ts: datetime
) -> dict[str, Any]:
    per_replica = {r.replica.pk: (r.scrape, r.window) for r in readings}
    return {
        "kind": "metrics",
        "deployment": deployment.pk,
        "ts": ts.timestamp(),
        "tokens_per_second": rollup.tokens_per_second,
        "in_flight": rollup.total.in_flight,
        "queued": rollup.total.queued,
        "error_rate": rollup.error_rate,
        **rollup.quantiles,
        "replicas": [
            _replica_row(r, _replica_figures(per_replica.get(r.pk))) for r in targets.replicas_of(deployment.pk)
        ],
        **_phase_fields(deployment),
    }


def deployment_payload(deployment: Deployment, targets: Targets) -> dict[str, Any]:
    return {
        "kind": "deployment",
        "deployment": deployment.pk,
        "replica_rows": [_replica_row(r) for r in targets.replicas_of(deployment.pk)],
        **_phase_fields(deployment),
    }


def _phase_fields(deployment: Deployment) -> dict[str, Any]:
    return {
        "phase": deployment.phase,
        "phase_message": deployment.phase_message,
        "ready_replicas": deployment.ready_replicas,
        "progress": deployment.progress or {},
    }


def store(rows: list[MetricSample], readings: list[Reading], *, interval: float) -> None:
    """Write the samples; keep each replica's scrape for the next pass's window."""
    if rows:
        MetricSample.objects.bulk_create(rows)
    if readings:
        states = {STATE_KEY.format(r.replica.pk): r.scrape.state() for r in readings}
        cache.set_many(states, timeout=int(max(60, interval * 10)))


def _sample(
    deployment: Deployment,
    ts: datetime,
    scrape: Scrape,
    win: Window | None,
    q: dict[str, float | None],
    *,
    replica: Replica | None,
) -> MetricSample:
    return MetricSample(
        tenant_id=deployment.tenant_id,
        deployment_id=deployment.pk,
        replica=replica,
        ts=ts,
        requests_total=scrape.requests,
        errors_total=scrape.errors,
        prompt_tokens_total=scrape.prompt_tokens,
        completion_tokens_total=scrape.completion_tokens,
        in_flight=scrape.in_flight,
        queued=scrape.queued,
        batch_size=scrape.batch_size,
        tokens_per_second=win.tokens_per_second if win else 0.0,
        ttft_p50=q.get("ttft_p50"),
        latency_p50=q.get("latency_p50"),
        latency_p95=q.get("latency_p95"),
        memory_bytes=scrape.memory_bytes,
    )


def prune(now: datetime | None = None) -> int:
    cutoff = (now or timezone.now()) - timedelta(seconds=int(settings.HANGAR_METRICS_RETENTION_SECONDS))
    deleted, _ = MetricSample.objects.filter(ts__lt=cutoff).delete()
    return deleted


def push(payloads: list[tuple[Deployment, dict[str, Any]]]) -> None:
    """Send each payload to its deployment's group, and a slimmer copy to its tenant's group."""
    layer = get_channel_layer()
    if layer is None or not payloads:
        return

    async def send_all() -> None:
        for deployment, payload in payloads:
            await layer.group_send(deployment_group(deployment.pk), {"type": "push", "payload": payload})
            slim = {k: v for k, v in payload.items() if k not in ("replicas", "replica_rows")}
            await layer.group_send(tenant_group(deployment.tenant_id), {"type": "push", "payload": slim})

    try:
        asyncio.run(send_all())
    except Exception:  # Redis down: the samples are stored, live updates resume next pass
        logger.warning("could not push metrics to websocket groups")


def scrape_with_lock() -> dict[str, int] | None:
    """Run a pass unless another worker is still in one (a slow pass must not pile up)."""
    timeout = int(max(5, float(settings.HANGAR_METRICS_INTERVAL) * 5))
    if not cache.add(LOCK_KEY, "1", timeout=timeout):
        return None
    try:
        return scrape_once()
    finally:
        cache.delete(LOCK_KEY)


__all__ = ["histogram_quantile", "parse_metrics", "prune", "scrape_once", "scrape_with_lock"]
