"""List pages serialize plain columns without DRF's per-row field machinery (``lean_rows``);
the answer must be byte for byte what ``serializer.data`` gave, nulls and ids included."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from controlplane.keys.models import ApiKey
from controlplane.tenancy.api.base import ScopedViewSet
from controlplane.tenancy.choices import Role
from tests.factories import (
    AuditLogFactory,
    DeploymentEventFactory,
    DeploymentFactory,
    MembershipFactory,
    PlatformAdminFactory,
    ReplicaFactory,
    TenantFactory,
    UsageRecordFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

TENANT_LISTS = ["deployments", "replicas", "events", "targets", "models", "keys", "usage", "audit", "members"]
PLATFORM_LISTS = ["platform/targets", "platform/grants", "platform/tenants", "platform/users", "platform/quotas"]


@pytest.fixture
def rows() -> dict[str, Any]:
    tenant = TenantFactory()
    owner = UserFactory()
    MembershipFactory(user=owner, tenant=tenant, role=Role.OWNER)
    deployment = DeploymentFactory(tenant=tenant, phase="Running", reconciled_at=timezone.now())
    ReplicaFactory(deployment=deployment, started_at=timezone.now())  # ready_at stays null
    ReplicaFactory(deployment=deployment)
    DeploymentEventFactory(tenant=tenant, deployment=deployment, reason="Scaled", message="to 2")
    key = ApiKey.objects.create(
        tenant=tenant, name="k", key_id="k1", digest="0" * 64, display_prefix="hgr_k1", scopes=["inference"]
    )
    ApiKey.objects.create(
        tenant=tenant, name="k2", key_id="k2", digest="0" * 64, display_prefix="hgr_k2", created_by=owner,
        expires_at=timezone.now() + timezone.timedelta(days=1),
    )  # fmt: skip
    UsageRecordFactory(tenant=tenant, api_key=key, model="m", minute=timezone.now(), requests=1)
    UsageRecordFactory(tenant=tenant, api_key=None, model="m", minute=timezone.now(), latency_ms_sum=1.5)
    AuditLogFactory(tenant=tenant, actor=None, actor_repr="system:worker", action="a", object_type="t")
    AuditLogFactory(
        tenant=tenant, actor=owner, actor_repr=owner.username, action="b", object_type="t", source_ip="10.0.0.1"
    )
    return {"owner": owner, "admin": PlatformAdminFactory()}


@pytest.mark.parametrize("path", TENANT_LISTS + PLATFORM_LISTS)
def test_lean_list_pages_answer_exactly_what_the_serializer_did(
    path: str, rows: dict[str, Any], client_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = client_for(rows["admin" if path.startswith("platform/") else "owner"])
    lean = client.get(f"/api/v1/{path}/", {"limit": 500})
    assert lean.status_code == 200, lean.content
    assert lean.json()["results"], "the list must not be empty for the comparison to mean anything"
    monkeypatch.setattr(ScopedViewSet, "list_rows", None)
    plain = client.get(f"/api/v1/{path}/", {"limit": 500})
    assert plain.status_code == 200
    assert lean.content == plain.content
