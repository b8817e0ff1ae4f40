"""The audit table is append-only in PostgreSQL: raw UPDATE and DELETE fail, whoever sends them;
deleting a tenant or a user still works and only detaches (nulls) the rows that pointed at it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, transaction

from controlplane.audit.models import AuditLog
from controlplane.tenancy.choices import Role
from controlplane.tenancy.models import Tenant
from tests.factories import AuditLogFactory, MembershipFactory, TenantFactory, UserFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the guard is a PostgreSQL trigger"),
]


def raw(sql: str, params: list[Any] | None = None) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params or [])


@pytest.fixture
def row() -> AuditLog:
    return AuditLogFactory(action="member.add", changes={"role": "viewer"})


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditlog SET action = 'member.remove' WHERE id = %s",
        "UPDATE audit_auditlog SET changes = '{}'::jsonb WHERE id = %s",
        "UPDATE audit_auditlog SET tenant_id = NULL WHERE id = %s",  # no deletion under way
        "DELETE FROM audit_auditlog WHERE id = %s",
    ],
)
def test_raw_updates_and_deletes_are_refused(row: AuditLog, sql: str) -> None:
    with pytest.raises(DatabaseError, match="append-only"):
        raw(sql, [row.pk])
    after = AuditLog.objects.get(pk=row.pk)
    assert (after.action, after.changes, after.tenant_id) == ("member.add", {"role": "viewer"}, row.tenant_id)


def test_the_orm_cannot_edit_or_delete_rows_either(row: AuditLog) -> None:
    row.action = "forged"
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        row.save()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditLog.objects.filter(pk=row.pk).delete()
    assert AuditLog.objects.get(pk=row.pk).action == "member.add"


def test_a_deletion_may_only_detach_rows_nothing_more(row: AuditLog) -> None:
    """The window a deletion opens (hangar.audit_detach) still refuses any other change."""
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('hangar.audit_detach', 'on', true)")
        cursor.execute("UPDATE audit_auditlog SET tenant_id = NULL, action = 'x' WHERE id = %s", [row.pk])
    assert AuditLog.objects.get(pk=row.pk).action == "member.add"


def test_deleting_a_tenant_through_the_api_still_works(client_for: Any) -> None:
    tenant = TenantFactory()
    owner = UserFactory()
    MembershipFactory(user=owner, tenant=tenant, role=Role.OWNER)
    earlier = AuditLogFactory(tenant=tenant, actor=owner, action="tenant.update")
    response = client_for(owner).delete(f"/api/v1/tenants/{tenant.slug}/")
    assert response.status_code == 204, response.content
    assert not Tenant.objects.filter(pk=tenant.pk).exists()
    kept = AuditLog.objects.get(pk=earlier.pk)
    assert kept.tenant_id is None and kept.actor_id == owner.pk and kept.action == "tenant.update"
    assert AuditLog.objects.filter(action="tenant.delete", object_id=str(tenant.pk)).exists()


def test_deleting_a_user_still_works_and_keeps_their_name_on_the_rows() -> None:
    user = UserFactory(username="leaving")
    earlier = AuditLogFactory(actor=user, actor_repr="leaving")
    get_user_model().objects.filter(pk=user.pk).delete()
    kept = AuditLog.objects.get(pk=earlier.pk)
    assert kept.actor_id is None and kept.actor_repr == "leaving"
