"""Autoscaler policy and tick: load per replica vs target concurrency, bounds, scale to zero."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from controlplane.deployments.models import DeploymentEvent
from tests.factories import DeploymentFactory, ReplicaFactory
from workers.autoscaler import autoscale_tick, desired_replicas

pytestmark = pytest.mark.django_db


def sample(replica: Any, *, in_flight: float, queued: float = 0, age_s: float = 1) -> None:
    from controlplane.deployments.models import MetricSample

    MetricSample.objects.create(
        tenant_id=replica.tenant_id,
        deployment_id=replica.deployment_id,
        replica=replica,
        ts=timezone.now() - timedelta(seconds=age_s),
        in_flight=in_flight,
        queued=queued,
    )


@pytest.mark.parametrize(
    "load, replicas, expected",
    [
        (0, 2, 1),  # idle: down one step at a time, not below min
        (8, 1, 1),  # exactly at target
        (9, 1, 2),
        (40, 1, 4),  # capped at max_replicas
        (17, 4, 3),  # down gently
    ],
)
def test_policy(load: float, replicas: int, expected: int) -> None:
    d = DeploymentFactory.build(
        autoscale=True,
        replicas=replicas,
        min_replicas=1,
        max_replicas=4,
        target_concurrency=8,
        last_request_at=timezone.now(),
    )
    assert desired_replicas(d, load=load, now=timezone.now()) == expected


def test_scale_to_zero_after_idle_and_back() -> None:
    now = timezone.now()
    d = DeploymentFactory.build(
        autoscale=True,
        replicas=1,
        min_replicas=1,
        max_replicas=2,
        scale_to_zero_idle_seconds=300,
        last_request_at=now - timedelta(seconds=301),
    )
    assert desired_replicas(d, load=0, now=now) == 0
    d.replicas = 0
    d.last_request_at = now  # the gateway held a request and recorded it
    assert desired_replicas(d, load=0, now=now) == 1


def test_tick_scales_from_latest_samples_and_records_it() -> None:
    d = DeploymentFactory(autoscale=True, replicas=1, min_replicas=1, max_replicas=4, target_concurrency=4)
    a = ReplicaFactory(deployment=d, tenant=d.tenant)
    b = ReplicaFactory(deployment=d, tenant=d.tenant)
    sample(a, in_flight=1, age_s=5)  # older sample of a: ignored
    sample(a, in_flight=6, queued=2)
    sample(b, in_flight=3)
    untouched = DeploymentFactory(autoscale=False, replicas=1, max_replicas=4)

    assert autoscale_tick() == {d.pk: 3}  # (6 + 2 + 3) / 4 -> 3
    d.refresh_from_db()
    assert d.replicas == 3
    event = DeploymentEvent.objects.filter(deployment=d, reason="Scaled").get()
    assert event.actor == "system:autoscaler"
    untouched.refresh_from_db()
    assert untouched.replicas == 1
    assert autoscale_tick() == {}  # same load: nothing more to do
