"""Target checks are in the audit log: who asked (``target.check``) and what the worker found
(``target.checked``). Periodic checks add a row only when a target's status changes."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.audit.models import AuditLog
from controlplane.core.tasks import CHECK_TARGET
from controlplane.deployments.models import Target
from tests.factories import PlatformAdminFactory, TargetFactory
from tests.support.ports import free_port
from workers import tasks

pytestmark = pytest.mark.django_db


def checked_rows(target: Target) -> list[AuditLog]:
    return list(AuditLog.objects.filter(action="target.checked", object_id=str(target.pk)).order_by("id"))


def test_a_requested_check_and_its_outcome_are_audited(
    client_for: Any, sent_tasks: Any, django_capture_on_commit_callbacks: Any
) -> None:
    target = TargetFactory(kind="local")
    admin = PlatformAdminFactory()
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(admin).post(f"/api/v1/platform/targets/{target.pk}/check/")
    assert response.status_code == 202
    asked = AuditLog.objects.get(action="target.check", object_id=str(target.pk))
    assert asked.actor_id == admin.pk

    [(name, args)] = sent_tasks
    assert name == CHECK_TARGET
    tasks.check_target(*args)  # what the worker runs
    [row] = checked_rows(target)
    assert row.actor_id is None and row.actor_repr == "system:worker"
    assert row.changes == {"status": [None, "ok"], "reason": "", "requested_by": admin.username}
    assert row.object_repr == target.name


def test_periodic_checks_are_audited_when_the_status_changes() -> None:
    target = TargetFactory(kind="local")
    tasks.check_target(target.pk)  # first result: a change from "never checked"
    tasks.check_target(target.pk)  # the same again: no row
    assert [row.changes["status"] for row in checked_rows(target)] == [[None, "ok"]]

    # The target now points at a daemon that is not there: the status changes, and is audited.
    Target.objects.filter(pk=target.pk).update(kind="docker", docker_url=f"tcp://127.0.0.1:{free_port()}")
    tasks.check_target(target.pk)
    rows = checked_rows(target)
    assert len(rows) == 2
    before, after = rows[1].changes["status"]
    assert before == "ok" and after != "ok" and rows[1].changes["reason"]
    assert "requested_by" not in rows[1].changes
