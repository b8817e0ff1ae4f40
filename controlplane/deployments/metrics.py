"""The control plane's state as Prometheus metrics, read afresh on every scrape of ``/metrics``.

Served by the web process (``controlplane.gateway.metrics.render`` appends it), so queue depth
and replica readiness are visible even while every worker is down, which is when they matter:

- ``hangar_celery_queue_depth{queue}``: messages waiting in the broker (Redis ``LLEN`` of the
  queue's lists, one per priority level);
- ``hangar_deployments{phase}``: deployments per phase;
- ``hangar_deployment_desired_replicas`` / ``hangar_deployment_ready_replicas``
  ``{deployment_id, tenant_id}``: per deployment that should be running;
- ``hangar_state_collector_up{source}``: 0 when the database or the broker could not be read
  (the families of that source are then left out rather than reported as zeros).

Labels are bounded by what platform admins and tenants have created (deployments), never by
client input, and are ids, not names: ``/metrics`` carries no tenant's names or slugs.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

CELERY_QUEUE = "celery"  # the default queue: every task of ours goes there
# kombu's Redis transport keeps one list per priority step: "celery", "celery\x06\x163", ...
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)
_REDIS_TIMEOUT_S = 1.0


def _queue_keys(queue: str) -> list[str]:
    return [queue if step == 0 else f"{queue}{_PRIORITY_SEP}{step}" for step in _PRIORITY_STEPS]


class StateCollector(Collector):
    """Reads the broker and the database on ``collect()``; never raises."""

    def __init__(self) -> None:
        self._redis: Any = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # no fixed names: families depend on what could be read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "hangar_state_collector_up", "1 if the state source could be read for this scrape.", labels=["source"]
        )
        try:
            depth = self._queue_depth()
        except Exception as exc:
            logger.warning("could not read the Celery queue depth: %s", type(exc).__name__)
            up.add_metric(["broker"], 0)
        else:
            up.add_metric(["broker"], 1)
            family = GaugeMetricFamily(
                "hangar_celery_queue_depth", "Messages waiting in the Celery queue.", labels=["queue"]
            )
            family.add_metric([CELERY_QUEUE], depth)
            yield family
        try:
            yield from self._deployments()
        except Exception as exc:
            logger.warning("could not read deployments for metrics: %s", type(exc).__name__)
            up.add_metric(["database"], 0)
        else:
            up.add_metric(["database"], 1)
        yield up

    def _queue_depth(self) -> int:
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(
                settings.CELERY_BROKER_URL,
                socket_timeout=_REDIS_TIMEOUT_S,
                socket_connect_timeout=_REDIS_TIMEOUT_S,
            )
        pipe = self._redis.pipeline(transaction=False)
        for key in _queue_keys(CELERY_QUEUE):
            pipe.llen(key)
        return int(sum(pipe.execute()))

    def _deployments(self) -> list[GaugeMetricFamily]:
        from django.db import connection

        from controlplane.deployments.choices import DesiredState
        from controlplane.deployments.models import Deployment

        try:
            rows = list(
                Deployment.objects.values_list(
                    "pk", "tenant_id", "phase", "desired_state", "replicas", "ready_replicas"
                ).order_by("pk")
            )
        finally:
            if not connection.in_atomic_block:
                connection.close()  # a scrape thread keeps no connection between scrapes
        phases = GaugeMetricFamily("hangar_deployments", "Deployments by phase.", labels=["phase"])
        for phase, count in sorted(Counter(row[2] for row in rows).items()):
            phases.add_metric([phase], count)
        labels = ["deployment_id", "tenant_id"]
        desired = GaugeMetricFamily(
            "hangar_deployment_desired_replicas", "Replicas a running deployment asks for.", labels=labels
        )
        ready = GaugeMetricFamily("hangar_deployment_ready_replicas", "Replicas ready to serve.", labels=labels)
        for pk, tenant_id, _phase, desired_state, replicas, ready_replicas in rows:
            if desired_state != DesiredState.RUNNING:
                continue
            values = [str(pk), str(tenant_id)]
            desired.add_metric(values, replicas)
            ready.add_metric(values, ready_replicas)
        return [phases, desired, ready]


_registry = CollectorRegistry(auto_describe=False)
_registry.register(StateCollector())


def control_plane_state() -> bytes:
    """The exposition text of the state families (blocking: database and Redis round trips)."""
    return generate_latest(_registry)
