"""The reconcile pass against an in-memory driver: convergence, idempotence, rolling, errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from controlplane.core.context import SYSTEM
from controlplane.deployments import services, status
from controlplane.deployments.choices import ConditionType, DesiredState, Phase, ReplicaState
from controlplane.deployments.models import Deployment, DeploymentEvent, Replica
from tests.factories import DeploymentFactory
from tests.workers.fakes import FakeDriver, permanent, temporary
from workers import reconciler

pytestmark = pytest.mark.django_db


def events(deployment: Any) -> list[str]:
    return list(DeploymentEvent.objects.filter(deployment=deployment).order_by("id").values_list("reason", flat=True))


def condition(deployment: Any, type_: str) -> dict[str, Any]:
    return next(c for c in deployment.conditions if c["type"] == type_)


def test_creates_replicas_then_reports_running_once_healthy(deployment: Any, fake_driver: FakeDriver, run: Any) -> None:
    outcome = run(deployment)
    assert fake_driver.names(deployment.pk) == [f"{deployment.name}-g1-0", f"{deployment.name}-g1-1"]
    assert deployment.phase == Phase.DEPLOYING
    assert outcome.requeue_after is not None  # keeps polling until ready, without blocking
    assert deployment.progress["step"] == "loading_model"
    assert Replica.objects.filter(deployment=deployment, state=ReplicaState.STARTING).count() == 2

    fake_driver.make_all_ready()
    outcome = run(deployment)
    assert deployment.phase == Phase.RUNNING
    assert deployment.ready_replicas == 2
    assert deployment.observed_generation == deployment.generation
    assert deployment.progress["step"] == "ready"
    assert condition(deployment, ConditionType.READY)["status"] == "True"
    assert outcome.requeue_after is None
    assert Replica.objects.filter(deployment=deployment, state=ReplicaState.READY).count() == 2
    assert events(deployment).count("ReplicaReady") == 2


def test_second_pass_over_a_converged_deployment_changes_nothing(
    deployment: Any, fake_driver: FakeDriver, run: Any
) -> None:
    run(deployment)
    fake_driver.make_all_ready()
    run(deployment)
    before = (list(fake_driver.created), list(fake_driver.removed), events(deployment), deployment.conditions)

    outcome = run(deployment)

    assert outcome.actions == []
    assert (fake_driver.created, fake_driver.removed, events(deployment), deployment.conditions) == before
    assert deployment.phase == Phase.RUNNING


def test_scaling_keeps_existing_replicas(deployment: Any, fake_driver: FakeDriver, run: Any) -> None:
    fake_driver.auto_ready = True
    run(deployment)
    run(deployment)
    first = fake_driver.names(deployment.pk)

    services.deployment_scale(actor=SYSTEM, deployment=deployment, replicas=3)
    deployment.refresh_from_db()
    run(deployment)
    assert set(first) < set(fake_driver.names(deployment.pk))
    assert fake_driver.removed == []
    run(deployment)
    assert deployment.phase == Phase.RUNNING and deployment.ready_replicas == 3

    services.deployment_scale(actor=SYSTEM, deployment=deployment, replicas=1)
    deployment.refresh_from_db()
    run(deployment)
    assert fake_driver.names(deployment.pk) == [f"{deployment.name}-g1-0"]
    assert deployment.phase == Phase.RUNNING
    assert deployment.observed_generation == deployment.generation


def test_rolling_restart_keeps_ready_capacity(deployment: Any, fake_driver: FakeDriver, run: Any) -> None:
    fake_driver.auto_ready = True
    run(deployment)
    run(deployment)
    fake_driver.auto_ready = False
    old = fake_driver.names(deployment.pk)

    services.deployment_restart(actor=SYSTEM, deployment=deployment)
    deployment.refresh_from_db()
    run(deployment)
    # CPU replicas: the default budget is max surge 1, max unavailable 0. One new replica of
    # revision 2 beside the old ones, still serving: never below the ready count asked.
    names = fake_driver.names(deployment.pk)
    assert set(old) <= set(names) and len(names) == 3
    assert deployment.phase == Phase.DEPLOYING
    assert deployment.ready_replicas == 2
    run(deployment)  # nothing ready yet: nothing more moves
    assert len(fake_driver.names(deployment.pk)) == 3

    [first] = [r.backend_id for r in fake_driver.list(deployment.pk) if r.generation == 2]
    fake_driver.healthy.add(first)
    run(deployment)
    assert deployment.ready_replicas >= 2  # one new ready + one old kept
    assert len([n for n in fake_driver.names(deployment.pk) if "-g1-" in n]) == 1
    assert len(fake_driver.names(deployment.pk)) == 3  # never more than replicas + max surge

    second = [r.backend_id for r in fake_driver.list(deployment.pk) if r.generation == 2 and r.backend_id != first]
    fake_driver.healthy.add(second[0])
    run(deployment)
    assert fake_driver.names(deployment.pk) == [f"{deployment.name}-g2-0", f"{deployment.name}-g2-1"]
    run(deployment)
    assert deployment.phase == Phase.RUNNING
    assert deployment.observed_generation == deployment.generation


def test_stop_start_and_delete(deployment: Any, fake_driver: FakeDriver, run: Any) -> None:
    fake_driver.auto_ready = True
    run(deployment)
    services.deployment_stop(actor=SYSTEM, deployment=deployment)
    deployment.refresh_from_db()
    run(deployment)
    assert fake_driver.names(deployment.pk) == []
    assert deployment.phase == Phase.STOPPED

    services.deployment_start(actor=SYSTEM, deployment=deployment)
    deployment.refresh_from_db()
    run(deployment)
    run(deployment)
    assert deployment.phase == Phase.RUNNING and len(fake_driver.names(deployment.pk)) == 2

    services.deployment_delete(actor=SYSTEM, deployment=deployment)
    run(deployment)
    assert fake_driver.names(deployment.pk) == []
    assert not Deployment.objects.filter(pk=deployment.pk).exists()


def test_dead_replica_is_replaced(deployment: Any, fake_driver: FakeDriver, run: Any) -> None:
    fake_driver.auto_ready = True
    run(deployment)
    run(deployment)
    victim = fake_driver.list(deployment.pk)[0]
    fake_driver.kill(victim.backend_id)

    run(deployment)
    assert victim.backend_id not in fake_driver.replicas
    assert len(fake_driver.names(deployment.pk)) == 2
    assert "ReplicaExited" in events(deployment)
    run(deployment)
    assert deployment.phase == Phase.RUNNING


def test_unhealthy_replica_is_replaced_after_threshold(
    deployment: Any, fake_driver: FakeDriver, run: Any, settings: Any
) -> None:
    settings.HANGAR_HEALTH_FAILURE_THRESHOLD = 3
    fake_driver.auto_ready = True
    run(deployment)
    run(deployment)
    sick = fake_driver.list(deployment.pk)[0]
    fake_driver.healthy.discard(sick.backend_id)

    run(deployment)
    run(deployment)
    assert sick.backend_id in fake_driver.replicas  # two failures: still tolerated
    assert Replica.objects.get(name=sick.name).consecutive_failures == 2
    assert deployment.phase == Phase.DEGRADED
    run(deployment)
    assert sick.backend_id not in fake_driver.replicas
    assert "ReplicaUnhealthy" in events(deployment)


def test_replica_not_ready_in_time_is_replaced(
    deployment: Any, fake_driver: FakeDriver, run: Any, settings: Any
) -> None:
    settings.HANGAR_READY_TIMEOUT = 30.0
    run(deployment)
    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        run(deployment)
    assert "ReadyTimeout" in events(deployment)
    assert deployment.phase == Phase.FAILED


def test_temporary_error_degrades_then_recovers(deployment: Any, fake_driver: FakeDriver, run: Any) -> None:
    fake_driver.auto_ready = True
    fake_driver.fail_with = temporary()
    outcome = run(deployment)
    assert outcome.temporary_error
    assert deployment.phase == Phase.DEGRADED
    assert "unreachable" in deployment.phase_message
    assert condition(deployment, ConditionType.BACKEND_REACHABLE)["status"] == "False"
    run(deployment)
    assert events(deployment).count("DaemonUnreachable") == 1  # no repeated event for the same state

    fake_driver.fail_with = None
    run(deployment)
    run(deployment)
    assert deployment.phase == Phase.RUNNING
    assert condition(deployment, ConditionType.BACKEND_REACHABLE)["status"] == "True"


def test_permanent_error_fails_with_reason_and_retries_later(
    deployment: Any, fake_driver: FakeDriver, run: Any
) -> None:
    fake_driver.fail_create = permanent()
    run(deployment)
    assert deployment.phase == Phase.FAILED
    assert "deploy/images/build" in deployment.phase_message
    assert condition(deployment, ConditionType.PROGRESSING)["reason"] == "ImageMissing"
    n_events = len(events(deployment))

    run(deployment)  # within the retry delay: nothing attempted, nothing emitted
    assert len(events(deployment)) == n_events

    fake_driver.fail_create = None
    fake_driver.auto_ready = True
    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        run(deployment)
        run(deployment)
    assert deployment.phase == Phase.RUNNING


def test_crash_before_ready_fails_the_deployment(deployment: Any, fake_driver: FakeDriver, run: Any) -> None:
    run(deployment)
    for replica in fake_driver.list(deployment.pk):
        fake_driver.kill(replica.backend_id, exit_code=1)
    run(deployment)
    assert deployment.phase == Phase.FAILED
    assert "before becoming ready" in deployment.phase_message
    assert fake_driver.names(deployment.pk) == []  # not recreated right away (no hot crash loop)


def test_spec_change_bumps_observed_generation_when_applied(deployment: Any, fake_driver: FakeDriver, run: Any) -> None:
    fake_driver.auto_ready = True
    run(deployment)
    services.deployment_update(actor=SYSTEM, deployment=deployment, data={"max_tokens_cap": 512})
    deployment.refresh_from_db()
    assert deployment.observed_generation < deployment.generation
    run(deployment)
    assert deployment.observed_generation == deployment.generation
    assert fake_driver.removed == []  # not a template change: replicas kept


def test_lease_keeps_a_second_worker_out_until_it_expires(deployment: Any, run: Any, settings: Any) -> None:
    claimed = status.deployment_claim(deployment_id=deployment.pk, owner="worker-a", lease_seconds=30)
    assert claimed is not None
    assert run(deployment, owner="worker-b").skipped
    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        assert not run(deployment, owner="worker-b").skipped  # worker-a died: its lease expired
    # worker-a's late write is refused (compare-and-set on the lease)
    assert not status.deployment_status_write(
        deployment=deployment, owner="worker-a", update=status.StatusUpdate(phase=Phase.FAILED)
    )


def test_orphans_of_deleted_deployments_are_collected(db: Any, fake_driver: FakeDriver, run: Any) -> None:
    keep = DeploymentFactory(replicas=1)
    gone = DeploymentFactory(replicas=1)
    run(keep)
    run(gone)
    Deployment.objects.filter(pk=gone.pk).delete()

    removed = reconciler.collect_orphans(fake_driver)

    assert removed == [f"{gone.name}-g1-0"]
    assert fake_driver.names() == [f"{keep.name}-g1-0"]


def test_extra_replicas_with_our_labels_are_removed(deployment: Any, fake_driver: FakeDriver, run: Any) -> None:
    fake_driver.auto_ready = True
    run(deployment)
    # A replica created by a worker that died before recording it, in a slot we do not want.
    spec = reconciler.replica_spec(deployment, slot=7)
    fake_driver.create(spec)
    run(deployment)
    assert fake_driver.names(deployment.pk) == [f"{deployment.name}-g1-0", f"{deployment.name}-g1-1"]


def test_deleting_is_verified_before_the_row_goes(deployment: Any, fake_driver: FakeDriver, run: Any) -> None:
    fake_driver.auto_ready = True
    run(deployment)
    services.deployment_delete(actor=SYSTEM, deployment=deployment)
    fake_driver.fail_with = temporary()
    run(deployment)
    deployment.refresh_from_db()
    assert deployment.desired_state == DesiredState.DELETED
    assert deployment.phase == Phase.DELETING
    fake_driver.fail_with = None
    run(deployment)
    assert not Deployment.objects.filter(pk=deployment.pk).exists()


def test_a_replacement_reusing_the_name_starts_with_a_clean_history(
    deployment: Any, fake_driver: FakeDriver, run: Any
) -> None:
    fake_driver.auto_ready = True
    run(deployment)
    run(deployment)
    victim = fake_driver.list(deployment.pk)[0]
    Replica.objects.filter(name=victim.name).update(consecutive_failures=2)
    fake_driver.auto_ready = False
    fake_driver.kill(victim.backend_id)

    for _ in range(5):  # the replacement loads slowly: it must not be judged by its predecessor's record
        run(deployment)
    row = Replica.objects.get(name=victim.name)
    assert row.backend_id != victim.backend_id
    assert row.ready_at is None and row.consecutive_failures == 0
    assert row.backend_id in fake_driver.replicas
    assert "ReplicaUnhealthy" not in events(deployment)
    fake_driver.make_all_ready()
    run(deployment)
    assert deployment.phase == Phase.RUNNING


def test_a_crash_looping_replica_is_retried_with_a_delay(
    deployment: Any, fake_driver: FakeDriver, run: Any, settings: Any
) -> None:
    settings.HANGAR_FAILED_RETRY_SECONDS = 30.0
    deployment.replicas = 1
    deployment.save()
    start = timezone.now()
    run(deployment)
    for step in range(3):
        for replica in fake_driver.list(deployment.pk):
            fake_driver.kill(replica.backend_id, exit_code=1)
        noticed = start + timedelta(seconds=10 + 50 * step)
        with time_machine.travel(noticed):
            run(deployment)  # the crash is noticed: Failed, nothing recreated yet
            assert fake_driver.names(deployment.pk) == []
        with time_machine.travel(noticed + timedelta(seconds=20)):
            run(deployment)  # still within the delay
            assert fake_driver.names(deployment.pk) == []
        with time_machine.travel(noticed + timedelta(seconds=35)):
            run(deployment)  # the delay since the last crash has passed: one more try
            assert len(fake_driver.names(deployment.pk)) == 1
    assert deployment.phase == Phase.FAILED
    assert len(fake_driver.created) == 4


def test_a_running_deployment_that_loses_its_only_replica_is_degraded(
    deployment: Any, fake_driver: FakeDriver, run: Any
) -> None:
    deployment.replicas = 1
    deployment.save()
    fake_driver.auto_ready = True
    run(deployment)
    run(deployment)
    assert deployment.phase == Phase.RUNNING
    fake_driver.auto_ready = False
    fake_driver.kill(fake_driver.list(deployment.pk)[0].backend_id)
    run(deployment)
    assert deployment.phase == Phase.DEGRADED
    assert len(fake_driver.names(deployment.pk)) == 1  # replacement on its way
