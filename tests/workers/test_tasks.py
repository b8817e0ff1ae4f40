"""Task wiring: names the control plane enqueues, follow-up de-duplication, target checks, logs, beat."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache

from controlplane.core.exceptions import NotFound
from controlplane.core.tasks import CHECK_TARGET, RECONCILE_DEPLOYMENT
from controlplane.deployments.models import Target
from controlplane.deployments.status import condition_set
from controlplane.tenancy.access import Access
from tests.factories import ReplicaFactory, TargetFactory
from workers import tasks
from workers.logs import replica_logs

pytestmark = pytest.mark.django_db


def test_task_names_match_what_the_control_plane_enqueues() -> None:
    assert tasks.reconcile_deployment.name == RECONCILE_DEPLOYMENT
    assert tasks.check_target.name == CHECK_TARGET


def test_beat_schedule_resyncs_every_deployment() -> None:
    from django.conf import settings

    from console.celery import app

    app.loader.import_default_modules()  # what a worker does at start: autodiscovery included
    schedule = app.conf.beat_schedule

    assert schedule["hangar-resync-deployments"]["schedule"] == settings.HANGAR_RESYNC_INTERVAL
    assert {entry["task"] for entry in schedule.values()} <= set(app.tasks)


def test_only_one_follow_up_is_scheduled_per_deployment(monkeypatch: Any) -> None:
    sent: list[tuple[Any, ...]] = []
    monkeypatch.setattr(tasks.reconcile_deployment, "apply_async", lambda *a, **kw: sent.append((a, kw)))
    cache.delete(tasks._follow_up_key(77))
    tasks._schedule_follow_up(77, 0.5)
    tasks._schedule_follow_up(77, 0.5)
    tasks._schedule_follow_up(77, 2.0)
    assert len(sent) == 1
    cache.delete(tasks._follow_up_key(77))


def test_check_target_on_a_local_target() -> None:
    target = TargetFactory(kind="local")
    tasks.check_target(target.pk)
    target.refresh_from_db()
    assert target.health["reachable"] is True and target.health_checked_at is not None
    tasks.check_target(999_999)  # gone: nothing to do


def test_replica_logs_respects_tenants_and_bounds(tmp_path: Any, settings: Any) -> None:
    replica = ReplicaFactory(backend_id="")
    member = Access(user_id=1, roles={replica.tenant_id: "viewer"})
    assert replica_logs(access=member, replica_id=replica.pk, tail=10) == ""
    with pytest.raises(NotFound):
        replica_logs(access=Access(user_id=2, roles={}), replica_id=replica.pk)

    # A local replica's log file is read through the driver; tail is clamped.
    from workers.drivers import local_driver

    driver = local_driver()
    replica.backend_id = f"{replica.deployment_id}/{replica.name}"
    replica.save()
    log = driver._log_path(replica.backend_id)
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    assert replica_logs(access=member, replica_id=replica.pk, tail=2) == "line 8\nline 9\n"
    assert replica_logs(access=member, replica_id=replica.pk, tail=0) == "line 9\n"


def test_condition_transition_time_moves_only_on_status_change() -> None:
    first = condition_set([], type="Ready", status=False, reason="Deploying", message="0/1")
    again = condition_set(first, type="Ready", status=False, reason="Deploying", message="0/1 still")
    assert again[0]["last_transition_time"] == first[0]["last_transition_time"]
    flipped = condition_set(again, type="Ready", status=True, reason="Running")
    assert flipped[0]["status"] == "True"


def test_target_health_write_through_status() -> None:
    from controlplane.deployments.status import target_health_write

    target = TargetFactory()
    target_health_write(target_id=target.pk, health={"reachable": False, "error": "x"})
    assert Target.objects.get(pk=target.pk).health["error"] == "x"


def test_watch_debounce_coalesces_bursts() -> None:
    from workers.watch import debounce

    seen: list[int] = []
    nudge = debounce(seen.append, within_s=60)
    for deployment_id in (1, 1, 2, 1, 2):
        nudge(deployment_id)
    assert seen == [1, 2]


def test_service_enqueues_reach_the_test_broker(test_broker: str) -> None:
    """Guard for the worker tests: what services enqueue must land where the test workers listen."""
    import redis

    from controlplane.core.context import SYSTEM
    from controlplane.deployments import services
    from tests.factories import ModelFactory, TenantFactory

    tenant = TenantFactory()
    services.deployment_create(
        actor=SYSTEM,
        tenant=tenant,
        model=ModelFactory(tenant=tenant),
        target=TargetFactory(tenant=tenant),
        data={"name": "queued"},
    )
    assert redis.Redis.from_url(test_broker).llen("celery") == 1
