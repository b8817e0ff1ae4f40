"""Quotas below the API: what a deployment costs, the defaults of new tenants, the audited quota
change, the autoscaler staying inside what it was charged, and the lock order of admission
against the reconciler's status writes (real PostgreSQL, two connections)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection, connections
from django.utils import timezone

from controlplane.audit.models import AuditLog
from controlplane.core.context import SYSTEM, Actor
from controlplane.core.exceptions import ValidationFailed
from controlplane.deployments import services
from controlplane.deployments.choices import DesiredState, Phase
from controlplane.deployments.models import Deployment, DeploymentEvent, MetricSample
from controlplane.deployments.quota import Cost, QuotaExceeded, deployment_cost, tenant_quota_usage
from controlplane.deployments.status import StatusUpdate, deployment_status_write
from controlplane.tenancy.models import Tenant
from controlplane.tenancy.services import tenant_create, tenant_quota_set
from tests.factories import DeploymentFactory, ModelFactory, ReplicaFactory, TargetFactory, TenantFactory, UserFactory
from tests.support.waiting import wait_for
from workers.autoscaler import Memory, Sample, autoscale_tick, decide, policy_for

pytestmark = pytest.mark.django_db

INVENTORY = [{"id": "0", "memory_mb": 16384}, {"id": "1", "memory_mb": 24576}, {"id": "2", "name": "no memory"}]


@pytest.fixture
def actor() -> Actor:
    return Actor(user=UserFactory(), source_ip="10.0.0.9", via="api")


# ----------------------------------------------------------------------------- cost


def test_cost_per_replica_times_replicas_counted() -> None:
    target = TargetFactory.build(gpu_inventory=INVENTORY)
    d = DeploymentFactory.build(target=target, gpus=1, cpus=1.5, memory_mb=1000, replicas=2, max_replicas=5)
    # GPU memory per GPU is the largest declared (24576), entries without memory_mb are ignored.
    assert deployment_cost(d) == Cost(
        gpus=2, gpu_memory_mb=24576 * 2, cpus=3.0, memory_mb=2000, replicas=2, deployments=1
    )
    d.autoscale = True  # charged at max_replicas, whatever replicas is now
    assert deployment_cost(d) == Cost(
        gpus=5, gpu_memory_mb=24576 * 5, cpus=7.5, memory_mb=5000, replicas=5, deployments=1
    )
    d.desired_state = DesiredState.STOPPED
    assert deployment_cost(d) == Cost(deployments=1)
    d.desired_state = DesiredState.DELETED
    assert deployment_cost(d) == Cost()


@pytest.mark.parametrize("inventory", [[], [{"memory_mb": "80GB"}, {"memory_mb": True}, "gpu"], {"memory_mb": 1}])
def test_unknown_gpu_memory_counts_zero(inventory: Any) -> None:
    d = DeploymentFactory.build(target=TargetFactory.build(gpu_inventory=inventory), gpus=1, replicas=2)
    assert deployment_cost(d).gpu_memory_mb == 0
    assert deployment_cost(d).gpus == 2


def test_usage_sums_every_deployment_but_deleted_ones() -> None:
    tenant = TenantFactory(quota_gpus=8)
    target = TargetFactory(tenant=tenant, gpu_inventory=INVENTORY)
    DeploymentFactory(tenant=tenant, target=target, gpus=1, replicas=2, max_replicas=2, cpus=0.05, memory_mb=128)
    DeploymentFactory(tenant=tenant, target=target, gpus=1, replicas=1, max_replicas=1, cpus=0.2, memory_mb=128)
    DeploymentFactory(tenant=tenant, target=target, gpus=1, replicas=4, desired_state=DesiredState.STOPPED)
    DeploymentFactory(tenant=tenant, target=target, gpus=1, replicas=9, desired_state=DesiredState.DELETED)
    DeploymentFactory(gpus=1, replicas=5)  # another tenant's
    usage = tenant_quota_usage(tenant)
    assert usage["gpus"] == {"used": 3, "allowed": 8}
    assert usage["cpus"] == {"used": 0.3, "allowed": None}  # 0.05 * 2 + 0.2, without float noise
    assert usage["replicas"] == {"used": 3, "allowed": None}
    assert usage["deployments"] == {"used": 3, "allowed": None}
    assert usage["gpu_memory_mb"]["used"] == 3 * 24576


# ----------------------------------------------------------------------------- setting quotas


def test_new_tenants_start_with_the_configured_defaults(settings: Any) -> None:
    settings.HANGAR_QUOTA_DEFAULTS = {
        "gpus": 2,
        "gpu_memory_mb": None,
        "cpus": 4.5,
        "memory_mb": 8192,
        "replicas": 0,
        "deployments": 3,
    }
    tenant = tenant_create(actor=SYSTEM, name="Fresh")
    assert (tenant.quota_gpus, tenant.quota_gpu_memory_mb, tenant.quota_cpus) == (2, None, 4.5)
    assert (tenant.quota_memory_mb, tenant.quota_replicas, tenant.quota_deployments) == (8192, 0, 3)


def test_quota_set_is_audited_and_takes_resource_or_field_names(actor: Actor) -> None:
    tenant = TenantFactory(quota_memory_mb=4096)
    tenant = tenant_quota_set(actor=actor, tenant=tenant, data={"gpus": 4, "quota_cpus": 2.5, "memory_mb": None})
    tenant.refresh_from_db()
    assert (tenant.quota_gpus, tenant.quota_cpus, tenant.quota_memory_mb) == (4, 2.5, None)
    row = AuditLog.objects.get(action="tenant.quota")
    assert row.tenant_id == tenant.pk and row.source_ip == "10.0.0.9"
    assert row.changes == {"quota_gpus": [None, 4], "quota_cpus": [None, 2.5], "quota_memory_mb": [4096, None]}
    tenant_quota_set(actor=actor, tenant=tenant, data={"gpus": 4})  # no change: no second row
    assert AuditLog.objects.filter(action="tenant.quota").count() == 1


def test_quota_set_refuses_what_is_not_a_limit(actor: Actor) -> None:
    tenant = TenantFactory()
    bad = {"gpus": -1, "cpus": float("nan"), "replicas": 1.5, "deployments": True, "memory_mb": "8G", "disks": 1}
    with pytest.raises(ValidationFailed) as caught:
        tenant_quota_set(actor=actor, tenant=tenant, data=bad)
    assert set(caught.value.field_errors) == set(bad)
    tenant.refresh_from_db()
    assert tenant.quota_gpus is None and not AuditLog.objects.filter(action="tenant.quota").exists()


# ----------------------------------------------------------------------------- autoscaler


def _loaded(deployment: Deployment, in_flight: float) -> None:
    replica = ReplicaFactory(deployment=deployment, tenant=deployment.tenant)
    MetricSample.objects.create(
        tenant_id=deployment.tenant_id, deployment=deployment, replica=replica, ts=timezone.now(), in_flight=in_flight
    )


def test_autoscaler_moves_within_the_charge_of_a_full_quota(
    actor: Actor, django_capture_on_commit_callbacks: Any
) -> None:
    tenant = TenantFactory(quota_replicas=4, quota_gpus=4)
    model, target = ModelFactory(tenant=tenant), TargetFactory(tenant=tenant)
    spec = {"name": "auto", "gpus": 1, "replicas": 1, "min_replicas": 1, "max_replicas": 4, "autoscale": True}
    with django_capture_on_commit_callbacks(execute=False):
        auto = services.deployment_create(actor=actor, tenant=tenant, model=model, target=target, data=spec)
        # Charged at max_replicas: the quota is full although one replica runs.
        assert tenant_quota_usage(tenant)["replicas"]["used"] == 4
        with pytest.raises(QuotaExceeded):
            services.deployment_create(
                actor=actor,
                tenant=tenant,
                model=model,
                target=target,
                data={"name": "more", "served_model_name": "more", "gpus": 0},
            )
        _loaded(auto, in_flight=1000)  # far more load than max_replicas can take
        assert autoscale_tick() == {auto.pk: 4}
        assert autoscale_tick() == {}  # at max_replicas: nothing more, however loaded
    auto.refresh_from_db()
    assert auto.replicas == 4
    assert tenant_quota_usage(tenant)["replicas"] == {"used": 4, "allowed": 4}


@pytest.mark.parametrize("replicas", [0, 3, 9])
def test_autoscaler_policy_never_goes_above_max_replicas(replicas: int) -> None:
    # Even a row whose bounds were never checked (min above max, replicas above max).
    d = DeploymentFactory.build(autoscale=True, replicas=replicas, min_replicas=6, max_replicas=3, target_concurrency=1)
    policy, memory = policy_for(d), Memory()
    for tick, load in enumerate((0, 2, 50, 50, 0)):
        decision = decide(policy, memory, Sample(at=float(tick), load=load), current=replicas, idle_for=0.0)
        memory = decision.memory
        assert decision.replicas <= 3


def test_min_replicas_above_max_is_refused_at_create(actor: Actor) -> None:
    tenant = TenantFactory()
    with pytest.raises(ValidationFailed) as caught:
        services.deployment_create(
            actor=actor,
            tenant=tenant,
            model=ModelFactory(tenant=tenant),
            target=TargetFactory(tenant=tenant),
            data={"name": "bad", "replicas": 2, "min_replicas": 3, "max_replicas": 2},
        )
    assert "min_replicas" in caught.value.field_errors


# ----------------------------------------------------------------------------- lock order


def _blocked_on_a_lock(pid: int) -> bool:
    """PostgreSQL's view of backend ``pid``: is it waiting for a lock?"""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # a fresh view even inside a transaction
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return bool(row and row[0] == "Lock")


@pytest.mark.django_db(transaction=True)
def test_admission_and_a_status_write_do_not_deadlock(actor: Actor) -> None:
    """The reconciler's status write holds the deployment row and appends an event (a row that
    references the tenant); a scale holds the tenant row and waits for the deployment. With
    ``FOR UPDATE`` on the tenant, PostgreSQL would abort one of them as a deadlock."""
    tenant = TenantFactory(quota_replicas=10)
    deployment = DeploymentFactory(tenant=tenant, replicas=1, max_replicas=4, reconcile_lease_owner="worker-1")
    scaler_pid: list[int] = []
    errors: list[BaseException] = []
    holding = threading.Event()

    def scale() -> None:
        try:
            holding.wait(10)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                scaler_pid.append(cursor.fetchone()[0])
            services.deployment_scale(actor=actor, deployment=deployment, replicas=2)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def status_write() -> None:
        from django.db import transaction

        try:
            with transaction.atomic():
                Deployment.objects.select_for_update().get(pk=deployment.pk)  # as the status write does
                holding.set()
                wait_for(lambda: scaler_pid, 10, "the scaler's backend pid", interval=0.01)
                # The scale holds the tenant and waits for us.
                wait_for(lambda: _blocked_on_a_lock(scaler_pid[0]), 10, "the scale waiting for a lock", interval=0.01)
                written = deployment_status_write(
                    deployment=deployment, owner="worker-1", update=StatusUpdate(phase=Phase.RUNNING, message="up")
                )
                assert written
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=status_write), threading.Thread(target=scale)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    deployment.refresh_from_db()
    assert (deployment.replicas, deployment.phase) == (2, Phase.RUNNING)
    assert DeploymentEvent.objects.filter(deployment=deployment, reason="Scaled").exists()
    assert Tenant.objects.filter(pk=tenant.pk).exists()
