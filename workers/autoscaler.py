"""Autoscaler: a beat tick that sets ``replicas`` of autoscaled deployments from live load.

Load is the in-flight plus queued requests of the latest ``MetricSample`` of each replica
(written by the metrics scraper). Desired replicas = ceil(load / target_concurrency), within
[min_replicas, max_replicas]; scaling down goes one replica per tick so a short lull does not
drop capacity at once. With ``scale_to_zero_idle_seconds`` set, a deployment without requests
for that long (``last_request_at``, written by the gateway) goes to zero; the gateway holds
the next request while a replica cold-starts, and its ``last_request_at`` brings one back here.

Quotas: an autoscaled deployment is charged at ``max_replicas`` when it is admitted
(``controlplane.deployments.quota``), and this never sets ``replicas`` above ``max_replicas``.
So every move the autoscaler makes is already paid for: its scale calls go through admission
like any other, ask for nothing more, and can never take a tenant over its quota.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from controlplane.core.context import Actor
from controlplane.core.exceptions import DomainError
from controlplane.deployments.choices import DesiredState
from controlplane.deployments.models import Deployment, MetricSample
from controlplane.deployments.services import deployment_scale

logger = logging.getLogger(__name__)

AUTOSCALER = Actor(user=None, via="autoscaler")


def current_load(deployment: Deployment, *, now: datetime) -> float:
    """In-flight + queued requests summed over the newest sample of each replica (fresh ones only)."""
    fresh_after = now - timedelta(seconds=max(10.0, 3 * settings.HANGAR_METRICS_INTERVAL))
    latest = (
        MetricSample.objects.filter(deployment_id=deployment.pk, ts__gte=fresh_after, replica__isnull=False)
        .values("replica_id")
        .annotate(ts=Max("ts"))
    )
    load = 0.0
    for row in latest:
        sample = MetricSample.objects.filter(replica_id=row["replica_id"], ts=row["ts"]).first()
        if sample is not None:
            load += sample.in_flight + sample.queued
    return load


def desired_replicas(deployment: Deployment, *, load: float, now: datetime) -> int:
    """The replica count the policy asks for, given the current load."""
    floor = max(deployment.min_replicas, 1)
    idle_limit = deployment.scale_to_zero_idle_seconds
    if idle_limit and load == 0:
        last = deployment.last_request_at
        if last is None or now - last > timedelta(seconds=idle_limit):
            return 0
    want = math.ceil(load / max(deployment.target_concurrency, 1)) if load else floor
    want = max(want, floor)
    if want < deployment.replicas:
        want = max(want, deployment.replicas - 1)  # scale down gently, one per tick
    # max_replicas is what the quota charged at admission: never above it (see the docstring).
    return min(want, deployment.max_replicas)


def autoscale_tick() -> dict[int, int]:
    """Apply the policy to every autoscaled, running deployment; returns {deployment id: new replicas}."""
    now = timezone.now()
    changed: dict[int, int] = {}
    for deployment in Deployment.objects.filter(autoscale=True, desired_state=DesiredState.RUNNING):
        want = desired_replicas(deployment, load=current_load(deployment, now=now), now=now)
        if want == deployment.replicas:
            continue
        try:
            deployment_scale(actor=AUTOSCALER, deployment=deployment, replicas=want)
        except DomainError as exc:
            logger.warning("autoscaler could not scale deployment %s to %s: %s", deployment.pk, want, exc.message)
            continue
        changed[deployment.pk] = want
    return changed
