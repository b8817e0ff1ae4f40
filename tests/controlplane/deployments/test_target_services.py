"""Target and grant services on real PostgreSQL: the grant check inside deployment_create, and
revocation racing a deployment being created, played out in two transactions at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction

from controlplane.core.context import SYSTEM
from controlplane.core.exceptions import Conflict, ValidationFailed
from controlplane.deployments import services
from controlplane.deployments.models import Deployment, TargetGrant
from tests.factories import ModelFactory, TargetFactory, TenantFactory
from tests.support.waiting import wait_for


@pytest.mark.django_db
def test_deployment_create_rechecks_the_grant() -> None:
    tenant = TenantFactory()
    model, ungranted = ModelFactory(tenant=tenant), TargetFactory(tenant=TenantFactory())
    with pytest.raises(ValidationFailed):
        services.deployment_create(actor=SYSTEM, tenant=tenant, model=model, target=ungranted, data={"name": "d"})
    assert not Deployment.objects.exists()


class Transaction(threading.Thread):
    """Runs ``work`` in its own connection and transaction, then holds the transaction open
    until ``release`` is set (so its row locks stay held)."""

    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.release = threading.Event()
        self.worked = threading.Event()
        self.pid: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with transaction.atomic():
                self.pid = connection.cursor().connection.info.backend_pid
                try:
                    self.work()
                finally:
                    self.worked.set()
                assert self.release.wait(timeout=30), "never released"
        except BaseException as exc:  # reported to the test
            self.error = exc
        finally:
            connection.close()


def waiting_for_a_lock(thread: Transaction) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [thread.pid])
        row = cursor.fetchone()
    return bool(row and row[0] == "Lock")


@pytest.fixture
def world() -> dict[str, Any]:
    tenant = TenantFactory()
    target = TargetFactory(tenant=tenant)
    return {
        "tenant": tenant,
        "model": ModelFactory(tenant=tenant),
        "target": target,
        "grant": TargetGrant.objects.get(target=target, tenant=tenant),
    }


def create(world: dict[str, Any]) -> Callable[[], Any]:
    return lambda: services.deployment_create(
        actor=SYSTEM, tenant=world["tenant"], model=world["model"], target=world["target"], data={"name": "d"}
    )


def revoke(world: dict[str, Any]) -> Callable[[], Any]:
    return lambda: services.target_revoke(actor=SYSTEM, grant=world["grant"])


@pytest.mark.django_db(transaction=True)
def test_revoke_waits_for_a_deployment_being_created_and_then_refuses(world: dict[str, Any]) -> None:
    creating = Transaction(create(world))
    creating.start()
    assert creating.worked.wait(timeout=30) and creating.error is None, creating.error
    revoking = Transaction(revoke(world))
    revoking.start()
    # The revocation must wait for the uncommitted deployment's transaction, not decide without it.
    wait_for(lambda: waiting_for_a_lock(revoking) or revoking.worked.is_set(), 30, "revoke blocked or done")
    assert not revoking.worked.is_set(), "revoke decided while a deployment on the grant was being created"
    creating.release.set()
    creating.join(30)
    assert revoking.worked.wait(timeout=30)
    revoking.release.set()
    revoking.join(30)
    assert isinstance(revoking.error, Conflict), revoking.error
    assert Deployment.objects.filter(target=world["target"], tenant=world["tenant"]).exists()
    assert TargetGrant.objects.filter(pk=world["grant"].pk).exists()


@pytest.mark.django_db(transaction=True)
def test_create_waits_for_a_revoke_in_flight_and_then_refuses(world: dict[str, Any]) -> None:
    revoking = Transaction(revoke(world))
    revoking.start()
    assert revoking.worked.wait(timeout=30) and revoking.error is None, revoking.error
    creating = Transaction(create(world))
    creating.start()
    wait_for(lambda: waiting_for_a_lock(creating) or creating.worked.is_set(), 30, "create blocked or done")
    assert not creating.worked.is_set(), "create decided while its grant was being revoked"
    revoking.release.set()
    revoking.join(30)
    assert creating.worked.wait(timeout=30)
    creating.release.set()
    creating.join(30)
    assert isinstance(creating.error, ValidationFailed), creating.error
    assert not Deployment.objects.exists() and not TargetGrant.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_target_delete_waits_for_a_deployment_being_created_and_then_refuses(world: dict[str, Any]) -> None:
    creating = Transaction(create(world))
    creating.start()
    assert creating.worked.wait(timeout=30) and creating.error is None, creating.error
    deleting = Transaction(lambda: services.target_delete(actor=SYSTEM, target=world["target"]))
    deleting.start()
    wait_for(lambda: waiting_for_a_lock(deleting) or deleting.worked.is_set(), 30, "delete blocked or done")
    assert not deleting.worked.is_set()
    creating.release.set()
    creating.join(30)
    assert deleting.worked.wait(timeout=30)
    deleting.release.set()
    deleting.join(30)
    assert isinstance(deleting.error, Conflict), deleting.error  # not a deadlock, not an IntegrityError
    assert Deployment.objects.filter(target=world["target"]).exists()
