"""Django's admin shows what the services own and changes none of it, even for a superuser:
no add, change or delete page works (403, or a view page without a save button), so no edit skips
the services' validation, audit rows, key-cache purges and websocket re-checks, and nobody adds,
edits or deletes an audit row there."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Model
from django.test import Client
from django.utils import timezone

from controlplane.audit.models import AuditLog
from controlplane.deployments.models import MetricSample
from tests.factories import (
    AccessTokenFactory,
    ApiKeyFactory,
    AuditLogFactory,
    DeploymentEventFactory,
    DeploymentFactory,
    MembershipFactory,
    ModelFactory,
    ReplicaFactory,
    TargetFactory,
    TargetGrantFactory,
    TenantFactory,
    UsageRecordFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def _metric_sample() -> MetricSample:
    deployment = DeploymentFactory()
    return MetricSample.objects.create(tenant=deployment.tenant, deployment=deployment, ts=timezone.now())


MAKERS: dict[str, Callable[[], Model]] = {
    "audit.auditlog": AuditLogFactory,
    "catalog.model": ModelFactory,
    "deployments.target": TargetFactory,
    "deployments.targetgrant": TargetGrantFactory,
    "deployments.deployment": DeploymentFactory,
    "deployments.replica": ReplicaFactory,
    "deployments.deploymentevent": DeploymentEventFactory,
    "deployments.metricsample": _metric_sample,
    "keys.apikey": ApiKeyFactory,
    "tenancy.tenant": TenantFactory,
    "tenancy.membership": MembershipFactory,
    "tenancy.accesstoken": AccessTokenFactory,
    "usage.usagerecord": UsageRecordFactory,
    "auth.user": UserFactory,
    "auth.group": lambda: Group.objects.create(name="operators"),
}


def service_owned() -> list[type[Model]]:
    """Every admin-registered model of the control plane, plus the users and groups."""
    return [
        model
        for model in admin.site._registry
        if model.__module__.startswith("controlplane.") or model in (get_user_model(), Group)
    ]


def label(model: type[Model]) -> str:
    return model._meta.label_lower


@pytest.fixture
def superuser() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests-1"))
    return client


def test_every_service_owned_model_in_the_admin_is_covered() -> None:
    labels = {label(model) for model in service_owned()}
    assert {"audit.auditlog", "keys.apikey", "tenancy.membership", "auth.user"} <= labels
    assert labels <= set(MAKERS), f"add a maker for {labels - set(MAKERS)}"


@pytest.mark.parametrize("model", service_owned(), ids=label)
def test_the_admin_refuses_to_add_change_or_delete(superuser: Client, model: type[Model]) -> None:
    obj = MAKERS[label(model)]()
    app, name = model._meta.app_label, model._meta.model_name
    base = f"/admin/{app}/{name}/"

    assert superuser.get(base).status_code == 200  # still visible
    assert superuser.get(f"{base}add/").status_code == 403
    assert superuser.post(f"{base}add/", {}).status_code == 403
    page = superuser.get(f"{base}{obj.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content  # a view, no save
    assert superuser.post(f"{base}{obj.pk}/change/", {}).status_code == 403
    assert superuser.get(f"{base}{obj.pk}/delete/").status_code == 403
    assert superuser.post(f"{base}{obj.pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = superuser.post(base, {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"})
    assert bulk.status_code in (200, 302, 403)
    assert model._default_manager.filter(pk=obj.pk).exists()


def test_a_superuser_cannot_forge_an_audit_row(superuser: Client) -> None:
    before = AuditLog.objects.count()
    response = superuser.post(
        "/admin/audit/auditlog/add/", {"actor_repr": "someone-else", "action": "key.revoke", "object_type": "apikey"}
    )
    assert response.status_code == 403
    assert AuditLog.objects.count() == before


def test_the_password_and_permission_pages_of_users_are_closed_too(superuser: Client) -> None:
    user: Any = UserFactory()
    response = superuser.post(
        f"/admin/auth/user/{user.pk}/password/", {"password1": "Another-pw-123", "password2": "Another-pw-123"}
    )
    assert response.status_code == 403
    user.refresh_from_db()
    assert user.check_password("pw-for-tests-1")
