"""A tenant's placement fields cannot move its pods off the target's node pool (Kubernetes):
tolerations of the cluster's own taints or key-less ones are refused, and a node label the
target pins cannot be overridden, through the public API with a tenant owner's token."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.factories import AccessTokenFactory, DeploymentFactory, ModelFactory, TargetFactory
from workers.reconciler import replica_spec

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner(make_member: Any) -> tuple[Any, APIClient]:
    user = make_member("owner")
    token = AccessTokenFactory(user=user).secret
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return user, client


def _create(client: APIClient, tenant: Any, target: Any, **spec: Any) -> Any:
    model = ModelFactory(tenant=tenant)
    body = {"tenant": tenant.slug, "name": "d", "model": model.pk, "target": target.pk, **spec}
    return client.post("/api/v1/deployments/", body, format="json")


@pytest.mark.parametrize(
    "toleration",
    [
        {"operator": "Exists"},  # key-less: tolerates every taint
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists"},
    ],
)
def test_tolerating_the_clusters_own_taints_is_refused(owner: Any, toleration: dict[str, str]) -> None:
    user, client = owner
    tenant = user.memberships.get().tenant
    target = TargetFactory(tenant=tenant, kind="kubernetes")
    response = _create(client, tenant, target, tolerations=[toleration])
    assert response.status_code == 400, response.content
    assert "tolerations" in response.content.decode()
    deployment = DeploymentFactory(tenant=tenant, target=target)
    patched = client.patch(f"/api/v1/deployments/{deployment.pk}/", {"tolerations": [toleration]}, format="json")
    assert patched.status_code == 400


def test_a_tenant_toleration_with_its_own_key_is_allowed(owner: Any) -> None:
    user, client = owner
    tenant = user.memberships.get().tenant
    target = TargetFactory(tenant=tenant, kind="kubernetes")
    response = _create(client, tenant, target, tolerations=[{"key": "team", "value": "a", "effect": "NoSchedule"}])
    assert response.status_code == 201, response.content


def test_a_label_the_target_pins_cannot_be_overridden(owner: Any) -> None:
    user, client = owner
    tenant = user.memberships.get().tenant
    target = TargetFactory(tenant=tenant, kind="kubernetes", node_selector={"pool": "tenants"})
    refused = _create(client, tenant, target, node_selector={"pool": "system"})
    assert refused.status_code == 400 and "pool" in refused.content.decode()
    allowed = _create(client, tenant, target, node_selector={"pool": "tenants", "zone": "a"})
    assert allowed.status_code == 201, allowed.content
    # Even a row written around the services cannot leave the pool: the target's labels win.
    deployment = DeploymentFactory(tenant=tenant, target=target, node_selector={"pool": "system", "zone": "b"})
    spec = replica_spec(deployment, slot=0)
    assert spec.node_selector == {"pool": "tenants", "zone": "b"}
