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


def parse_metrics(text: str, *, at: float) -> Scrape:
    scrape = Scrape(at=at)
    by_histogram = {name: key for key, name in HISTOGRAMS.items()}
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, float(sample.value)
            if name == PREFIX + "requests_total":
                scrape.requests += value
                if is_error_status(labels.get("status", "")):
                    scrape.errors += value
            elif name == PREFIX + "prompt_tokens_total":
                scrape.prompt_tokens = value
            elif name == PREFIX + "completion_tokens_total":
                scrape.completion_tokens = value
            elif name == PREFIX + "requests_in_flight":
                scrape.in_flight = value
            elif name == PREFIX + "queue_depth":
                scrape.queued = value
            elif name == PREFIX + "batch_size":
                scrape.batch_size = value
            elif name == PREFIX + "memory_bytes":
                # RSS on CPU; on CUDA the allocated GPU memory is what operators watch.
                if labels.get("kind") in ("rss", "gpu_allocated", None):
                    scrape.memory_bytes = max(scrape.memory_bytes, value)
            elif name.endswith("_bucket") and name[: -len("_bucket")] in by_histogram:
                buckets[by_histogram[name[: -len("_bucket")]]].append((float(labels["le"]), value))
    scrape.buckets = {key: sorted(values) for key, values in buckets.items()}
    return scrape


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


def scrape_once() -> dict[str, int]:
    """One scrape of every ready replica; returns counts for logs and tests."""
    interval = float(settings.HANGAR_METRICS_INTERVAL)
    deployments = {d.pk: d for d in _live_deployments()}
    replicas = list(Replica.objects.filter(deployment_id__in=deployments).order_by("deployment_id", "name"))
    ready = [r for r in replicas if r.state == ReplicaState.READY and r.endpoint]
    tokens = {d: replica_token(d) for d in {r.deployment_id for r in ready}}
    fetched = asyncio.run(
        fetch_all(
            {r.pk: metrics_url(r.endpoint) for r in ready},
            request_timeout=max(0.5, interval),
            tokens={r.pk: tokens[r.deployment_id] for r in ready},
        )
    )

    previous_states = cache.get_many([STATE_KEY.format(r.pk) for r in ready])
    now_dt = timezone.now()
    rows: list[MetricSample] = []
    new_states: dict[str, Any] = {}
    per_deployment: dict[int, list[tuple[Replica, Scrape, Window | None]]] = defaultdict(list)
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
        win = window(scrape, before)
        new_states[STATE_KEY.format(replica.pk)] = scrape.state()
        per_deployment[replica.deployment_id].append((replica, scrape, win))
        q = quantiles(win.buckets) if win else {}
        rows.append(_sample(replica.deployment_id, deployments, now_dt, scrape, win, q, replica=replica))

    payloads: list[tuple[Deployment, dict[str, Any]]] = []
    for deployment_id, items in per_deployment.items():
        deployment = deployments[deployment_id]
        windows = [w for _, _, w in items if w is not None]
        merged = {key: merge_buckets(w.buckets.get(key, []) for w in windows) for key in ("ttft", "e2e")}
        q = quantiles(merged) if windows else {}
        total = Scrape(
            at=time.time(),
            requests=sum(s.requests for _, s, _ in items),
            errors=sum(s.errors for _, s, _ in items),
            prompt_tokens=sum(s.prompt_tokens for _, s, _ in items),
            completion_tokens=sum(s.completion_tokens for _, s, _ in items),
            in_flight=sum(s.in_flight for _, s, _ in items),
            queued=sum(s.queued for _, s, _ in items),
            batch_size=sum(s.batch_size for _, s, _ in items),
            memory_bytes=sum(s.memory_bytes for _, s, _ in items),
        )
        tps = sum(w.tokens_per_second for w in windows)
        rollup = _sample(deployment_id, deployments, now_dt, total, None, q, replica=None)
        rollup.tokens_per_second = tps
        rows.append(rollup)
        requests = sum(w.requests for w in windows)
        per_replica = {r.pk: (s, w) for r, s, w in items}
        payloads.append(
            (
                deployment,
                {
                    "kind": "metrics",
                    "deployment": deployment_id,
                    "ts": now_dt.timestamp(),
                    "tokens_per_second": tps,
                    "in_flight": total.in_flight,
                    "queued": total.queued,
                    "error_rate": (sum(w.errors for w in windows) / requests) if requests > 0 else None,
                    **q,
                    "replicas": [
                        _replica_row(r, _replica_figures(per_replica.get(r.pk)))
                        for r in replicas
                        if r.deployment_id == deployment_id
                    ],
                },
            )
        )
    # Deployments without a scraped replica still get their phase, progress and replica table.
    for deployment_id, deployment in deployments.items():
        if deployment_id in per_deployment:
            continue
        payloads.append(
            (
                deployment,
                {
                    "kind": "deployment",
                    "deployment": deployment_id,
                    "replica_rows": [_replica_row(r) for r in replicas if r.deployment_id == deployment_id],
                },
            )
        )
    for deployment, payload in payloads:
        payload.update(
            {
                "phase": deployment.phase,
                "phase_message": deployment.phase_message,
                "ready_replicas": deployment.ready_replicas,
                "progress": deployment.progress or {},
            }
        )

    if rows:
        MetricSample.objects.bulk_create(rows)
    if new_states:
        cache.set_many(new_states, timeout=int(max(60, interval * 10)))
    pruned = prune()
    push(payloads)
    return {"replicas": len(ready), "samples": len(rows), "pruned": pruned, "pushed": len(payloads)}


def _sample(
    deployment_id: int,
    deployments: dict[int, Deployment],
    ts: datetime,
    scrape: Scrape,
    win: Window | None,
    q: dict[str, float | None],
    *,
    replica: Replica | None,
) -> MetricSample:
    return MetricSample(
        tenant_id=deployments[deployment_id].tenant_id,
        deployment_id=deployment_id,
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
