"""Graceful removal: out of routing first (every gateway told), then SIGTERM, then gone."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import time_machine
from django.conf import settings as django_settings
from django.utils import timezone

from controlplane.core.context import SYSTEM
from controlplane.deployments import services
from controlplane.deployments.choices import EventType, ReplicaState
from controlplane.deployments.draining import ROUTES_CHANNEL
from controlplane.deployments.models import DeploymentEvent, Replica
from tests.support.waiting import wait_for
from tests.workers.fakes import FakeDriver
from workers import draining

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _drain_settings(settings: Any) -> None:
    settings.HANGAR_REPLICA_DRAIN_SECONDS = 30.0
    settings.HANGAR_GATEWAY_ROUTE_CACHE_SECONDS = 1.0
    settings.HANGAR_GATEWAY_ROUTE_STALE_SECONDS = 1.0  # every gateway drops a replica within 2 s


def routed(deployment: Any) -> list[str]:
    """Backend ids of the replicas the gateway routes to (it reads ready rows: gateway_routes)."""
    return sorted(
        Replica.objects.filter(deployment=deployment, state=ReplicaState.READY).values_list("backend_id", flat=True)
    )


def scaled_to_one(deployment: Any, fake_driver: FakeDriver, run: Any) -> tuple[str, str]:
    """Two ready replicas, then a scale to one; returns (kept, leaving) backend ids."""
    fake_driver.auto_ready = True
    run(deployment)
    run(deployment)
    assert len(routed(deployment)) == 2
    services.deployment_scale(actor=SYSTEM, deployment=deployment, replicas=1)
    deployment.refresh_from_db()
    by_name = {r.name: r.backend_id for r in fake_driver.list(deployment.pk)}
    return by_name[f"{deployment.name}-g1-0"], by_name[f"{deployment.name}-g1-1"]


def test_a_replica_leaves_routing_then_is_asked_to_stop_then_removed(
    deployment: Any, fake_driver: FakeDriver, run: Any
) -> None:
    kept, leaving = scaled_to_one(deployment, fake_driver, run)
    listener = redis.Redis.from_url(django_settings.REDIS_URL).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(ROUTES_CHANNEL)
    wait_for(lambda: listener.get_message(timeout=0.1) is None, 5, "subscribed")  # drains the confirmation
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        outcome = run(deployment)
        # Out of routing at once, announced to every gateway, still running and not yet signalled.
        assert routed(deployment) == [kept]
        row = Replica.objects.get(backend_id=leaving)
        assert row.state == ReplicaState.TERMINATING and row.draining_since == start
        message = wait_for(lambda: listener.get_message(timeout=0.1), 5, "an announcement")
        assert message["data"] == str(deployment.tenant_id).encode()
        assert leaving in fake_driver.replicas and fake_driver.terminated == []
        assert outcome.requeue_after == draining.POLL_WHILE_DRAINING_S
        assert deployment.ready_replicas == 1

        clock.shift(1.5)  # some gateway may still route to it: not yet
        run(deployment)
        assert fake_driver.terminated == []

        clock.shift(1.0)  # every gateway has dropped it: SIGTERM, once
        run(deployment)
        run(deployment)
        assert fake_driver.terminated == [f"{deployment.name}-g1-1"]
        assert leaving in fake_driver.replicas  # draining its requests

        clock.shift(29)
        run(deployment)
        assert leaving in fake_driver.replicas

        clock.shift(2)  # past HANGAR_REPLICA_DRAIN_SECONDS: stopped however busy
        outcome = run(deployment)
    assert fake_driver.names(deployment.pk) == [f"{deployment.name}-g1-0"]
    assert not Replica.objects.filter(backend_id=leaving).exists()
    timeout = DeploymentEvent.objects.get(deployment=deployment, reason="DrainTimeout")
    assert timeout.type == EventType.WARNING
    assert outcome.requeue_after is None


def test_a_replica_that_drains_exits_and_goes_quietly(deployment: Any, fake_driver: FakeDriver, run: Any) -> None:
    _, leaving = scaled_to_one(deployment, fake_driver, run)
    fake_driver.exit_on_terminate = True
    with time_machine.travel(timezone.now(), tick=False) as clock:
        run(deployment)
        clock.shift(3)
        run(deployment)  # SIGTERM; it finishes its requests and exits 0
        run(deployment)
    assert leaving not in fake_driver.replicas
    reasons = list(DeploymentEvent.objects.filter(deployment=deployment).values_list("reason", flat=True))
    assert "ReplicaStopped" in reasons
    assert "ReplicaExited" not in reasons  # an exit we asked for is no crash
    assert not DeploymentEvent.objects.filter(deployment=deployment, type=EventType.WARNING).exists()


def test_a_new_replica_never_takes_the_name_of_a_leaving_one(
    deployment: Any, fake_driver: FakeDriver, run: Any
) -> None:
    _, leaving = scaled_to_one(deployment, fake_driver, run)
    run(deployment)  # g1-1 leaving
    services.deployment_scale(actor=SYSTEM, deployment=deployment, replicas=2)
    deployment.refresh_from_db()
    run(deployment)
    names = fake_driver.names(deployment.pk)
    assert len(names) == 3 and len(set(names)) == 3, names
    assert Replica.objects.get(backend_id=leaving).state == ReplicaState.TERMINATING


def test_a_replica_that_never_served_is_removed_at_once(deployment: Any, fake_driver: FakeDriver, run: Any) -> None:
    run(deployment)  # two replicas, neither ready
    services.deployment_scale(actor=SYSTEM, deployment=deployment, replicas=1)
    deployment.refresh_from_db()
    run(deployment)
    assert len(fake_driver.names(deployment.pk)) == 1
    assert fake_driver.terminated == []


@pytest.mark.parametrize(("surge", "unavailable"), [("1", "0"), ("0", "1")])
def test_a_rolling_update_counts_draining_replicas_in_its_surge(
    deployment: Any, fake_driver: FakeDriver, run: Any, surge: str, unavailable: str
) -> None:
    """A replaced replica drains while its successor starts: it still holds its GPU, so at no pass
    may new + kept + draining replicas exceed replicas + max surge."""
    from controlplane.deployments import rollouts
    from controlplane.deployments.choices import RolloutState
    from controlplane.deployments.models import Rollout

    services.deployment_scale(actor=SYSTEM, deployment=deployment, replicas=3)
    deployment.refresh_from_db()
    fake_driver.auto_ready = True
    run(deployment)
    run(deployment)
    fake_driver.auto_ready = False
    fake_driver.exit_on_terminate = True  # each one drains at once when asked to stop
    rollouts.rollout_policy_set(
        actor=SYSTEM, deployment=deployment, data={"max_surge": surge, "max_unavailable": unavailable}
    )
    services.deployment_restart(actor=SYSTEM, deployment=deployment)
    deployment.refresh_from_db()
    most, fewest_ready = 0, 3
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _ in range(60):
            run(deployment)
            live = [r for r in fake_driver.list(deployment.pk) if r.alive]
            most = max(most, len(live))
            fewest_ready = min(fewest_ready, sum(1 for r in live if r.backend_id in fake_driver.healthy))
            if Rollout.objects.get(deployment=deployment).state == RolloutState.COMPLETED:
                break
            fake_driver.make_all_ready()  # new replicas come up between passes
            clock.shift(1.0)
        assert Rollout.objects.get(deployment=deployment).state == RolloutState.COMPLETED
        for _ in range(4):  # the last replaced one finishes leaving
            clock.shift(1.0)
            run(deployment)
    assert sorted(r.generation for r in fake_driver.list(deployment.pk)) == [2, 2, 2]
    assert most <= 3 + int(surge), f"{most} replicas alive at once with max surge {surge}"
    assert fewest_ready >= 3 - int(unavailable)
