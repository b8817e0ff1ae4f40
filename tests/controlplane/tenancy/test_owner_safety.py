"""A tenant always keeps an owner, even when two owners demote each other at the same moment.

Real PostgreSQL, two requests on two threads (each with its own database connection) through the
REST API. A third connection holds the tenant's membership rows first, so both requests are
in flight together before either can commit: without row locks each would count the other as
the owner who stays, and both demotions would land.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from controlplane.tenancy.choices import Role
from controlplane.tenancy.models import Membership
from tests.factories import MembershipFactory, TenantFactory, UserFactory
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL"),
]


@contextmanager
def rows_held(tenant_id: int) -> Iterator[None]:
    """Lock the tenant's memberships from a connection of our own until the block ends."""
    holder = connection.get_new_connection(connection.get_connection_params())
    try:
        holder.execute("SELECT id FROM tenancy_membership WHERE tenant_id = %s FOR UPDATE", [tenant_id])
        yield
    finally:
        holder.rollback()
        holder.close()


def backends_waiting_for_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE NOT l.granted AND a.datname = current_database()"
        )
        return int(cursor.fetchone()[0])


def patch_role(actor: Any, membership: Membership, role: str, results: dict[str, Any]) -> None:
    from django.db import connection as thread_connection

    try:
        client = APIClient()
        client.force_authenticate(actor)
        response = client.patch(f"/api/v1/members/{membership.pk}/", {"role": role}, format="json")
        results[actor.username] = (response.status_code, response.json())
    finally:
        thread_connection.close()


def test_two_owners_demoting_each_other_leave_one_owner() -> None:
    tenant = TenantFactory()
    alice, bob = UserFactory(), UserFactory()
    alices = MembershipFactory(user=alice, tenant=tenant, role=Role.OWNER)
    bobs = MembershipFactory(user=bob, tenant=tenant, role=Role.OWNER)
    results: dict[str, Any] = {}
    threads = [
        threading.Thread(target=patch_role, args=(alice, bobs, Role.ADMIN, results)),
        threading.Thread(target=patch_role, args=(bob, alices, Role.ADMIN, results)),
    ]
    with rows_held(tenant.pk):
        for thread in threads:
            thread.start()
        wait_for(lambda: backends_waiting_for_locks() >= 2, 20, "both requests waiting on the held rows")
    for thread in threads:
        thread.join(timeout=20)
        assert not thread.is_alive()

    statuses = sorted(status for status, _ in results.values())
    assert statuses[0] == 200, results
    assert statuses[1] in (403, 409), results  # the actor was demoted first, or was the last owner
    loser = next(body for status, body in results.values() if status != 200)
    assert loser["detail"] in {"You cannot grant a role above your own.", "A tenant must keep at least one owner."}
    owners = list(Membership.objects.filter(tenant=tenant, role=Role.OWNER).values_list("user__username", flat=True))
    assert len(owners) == 1
    winner = next(name for name, (status, _) in results.items() if status == 200)
    assert owners == [winner]  # whoever demoted the other stays owner


def test_the_last_owner_cannot_leave_or_step_down() -> None:
    tenant = TenantFactory()
    owner = MembershipFactory(user=UserFactory(), tenant=tenant, role=Role.OWNER)
    client = APIClient()
    client.force_authenticate(owner.user)
    response = client.patch(f"/api/v1/members/{owner.pk}/", {"role": Role.VIEWER}, format="json")
    assert response.status_code == 409 and response.json()["detail"] == "A tenant must keep at least one owner."
    response = client.delete(f"/api/v1/members/{owner.pk}/")
    assert response.status_code == 409
    assert Membership.objects.get(pk=owner.pk).role == Role.OWNER
