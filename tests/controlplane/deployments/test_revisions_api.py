"""Revisions, rollback, rollout policy and the fault switch through the HTTP API (issue 13 items 2-4, 7)."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.audit.models import AuditLog
from controlplane.deployments.models import Deployment, DeploymentEvent, Revision, Rollout
from controlplane.tenancy.choices import Role
from tests.factories import ModelFactory, PlatformAdminFactory, TargetFactory, TenantFactory

pytestmark = pytest.mark.django_db


def create(client: Any, tenant: Any, **spec: Any) -> dict[str, Any]:
    model, target = ModelFactory(tenant=tenant), TargetFactory(tenant=tenant)
    data = {"name": "chat", "model": model.pk, "target": target.pk, "replicas": 2, "max_replicas": 4, **spec}
    response = client.post("/api/v1/deployments/", data, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def spec_of(pk: int) -> dict[str, Any]:
    from controlplane.deployments.revisions import snapshot

    return snapshot(Deployment.objects.get(pk=pk))


def test_every_template_change_is_a_numbered_revision_and_rollback_restores_it(
    tenant: Any, make_member: Any, client_for: Any
) -> None:
    client = client_for(make_member(Role.OPERATOR, tenant))
    d = create(client, tenant, max_batch_size=8)
    url = f"/api/v1/deployments/{d['id']}"
    first = spec_of(d["id"])

    # Scaling is not a template change: no revision.
    assert client.post(f"{url}/scale/", {"replicas": 3}, format="json").status_code == 202
    answer = client.patch(
        f"{url}/", {"max_batch_size": 16, "dtype": "float16", "change_reason": "bigger batches"}, format="json"
    )
    assert answer.status_code == 200, answer.content
    assert client.patch(f"{url}/", {"memory_mb": 4096}, format="json").status_code == 200
    rows = client.get(f"{url}/revisions/").json()["results"]
    assert [r["number"] for r in rows] == [3, 2, 1]
    assert rows[1]["reason"] == "bigger batches" and rows[1]["actor"]
    assert rows[2]["spec"] == first
    assert Deployment.objects.get(pk=d["id"]).template_generation == 3

    diff = client.get(f"{url}/revisions-diff/?a=1&b=3").json()["changes"]
    assert diff == {
        "dtype": {"a": "float32", "b": "float16"},
        "max_batch_size": {"a": 8, "b": 16},
        "memory_mb": {"a": 2048, "b": 4096},
    }
    assert client.get(f"{url}/revisions-diff/?a=1&b=x").status_code == 400
    assert client.get(f"{url}/revisions/9/").status_code == 404

    answer = client.post(f"{url}/rollback/", {"revision": 1}, format="json")
    assert answer.status_code == 202, answer.content
    assert spec_of(d["id"]) == first  # the exact spec of revision 1
    newest = client.get(f"{url}/revisions/4/").json()
    assert newest["spec"] == first and newest["rollback_of"] == 1
    deployment = Deployment.objects.get(pk=d["id"])
    assert deployment.template_generation == 4 and deployment.replicas == 3  # scale is not part of a revision
    assert AuditLog.objects.filter(action="deployment.rollback", object_id=str(d["id"])).exists()
    assert DeploymentEvent.objects.filter(deployment_id=d["id"], reason="RolledBackTo").exists()

    # History is immutable.
    revision = Revision.objects.get(deployment_id=d["id"], number=1)
    revision.reason = "rewritten"
    with pytest.raises(Exception, match="immutable"):
        revision.save()


def test_revisions_are_tenant_scoped_and_rollback_needs_change_rights(
    tenant: Any, make_member: Any, client_for: Any
) -> None:
    d = create(client_for(make_member(Role.OPERATOR, tenant)), tenant)
    url = f"/api/v1/deployments/{d['id']}"
    outsider = client_for(make_member(Role.OWNER, TenantFactory()))
    assert outsider.get(f"{url}/revisions/").status_code == 404
    assert outsider.post(f"{url}/rollback/", {"revision": 1}, format="json").status_code == 404
    viewer = client_for(make_member(Role.VIEWER, tenant))
    assert viewer.get(f"{url}/revisions/").status_code == 200
    assert viewer.post(f"{url}/rollback/", {"revision": 1}, format="json").status_code == 403
    assert viewer.patch(f"{url}/rollout-policy/", {"strategy": "canary"}, format="json").status_code == 403


def test_rollout_policy_is_validated(tenant: Any, make_member: Any, client_for: Any) -> None:
    client = client_for(make_member(Role.OPERATOR, tenant))
    d = create(client, tenant)
    url = f"/api/v1/deployments/{d['id']}/rollout-policy/"
    assert client.get(url).json()["strategy"] == "rolling"
    bad = [
        {"max_surge": "-1"},
        {"max_surge": "150%"},
        {"max_surge": "0", "max_unavailable": "0"},
        {"steps": [{"weight": 50}, {"weight": 10}]},
        {"steps": []},
        {"steps": [{"weight": 10, "pause_seconds": -1}]},
        {"analysis": {"max_error_rate": 2}},
        {"strategy": "bluegreen"},
        {"sticky": "cookie"},
    ]
    for body in bad:
        answer = client.patch(url, body, format="json")
        assert answer.status_code == 400, (body, answer.content)
    good = {
        "strategy": "canary",
        "max_surge": "25%",
        "max_unavailable": "0",
        "steps": [{"weight": 10, "pause_seconds": 5}, {"weight": 50, "pause_seconds": None}, {"weight": 100}],
        "analysis": {"min_requests": 30, "max_error_rate": 0.1},
        "sticky": "key",
    }
    answer = client.patch(url, good, format="json")
    assert answer.status_code == 200, answer.content
    shown = client.get(url).json()
    assert shown["steps"][1] == {"weight": 50, "pause_seconds": None}
    assert shown["analysis"]["min_requests"] == 30 and shown["analysis"]["max_ttft_ratio"] == 3.0
    assert shown["max_surge"] == "25%" and shown["sticky"] == "key"


def test_a_canary_starts_only_from_a_serving_deployment_and_can_be_aborted(
    tenant: Any, make_member: Any, client_for: Any
) -> None:
    client = client_for(make_member(Role.OPERATOR, tenant))
    d = create(client, tenant)
    url = f"/api/v1/deployments/{d['id']}"
    client.patch(f"{url}/rollout-policy/", {"strategy": "canary"}, format="json")
    Deployment.objects.filter(pk=d["id"]).update(phase="Running")
    before = spec_of(d["id"])
    assert client.patch(f"{url}/", {"max_batch_size": 64}, format="json").status_code == 200
    [rollout] = client.get(f"{url}/rollouts/").json()["results"]
    assert rollout["strategy"] == "canary" and rollout["state"] == "Progressing" and rollout["weight"] == 10
    assert (rollout["stable_revision"], rollout["canary_revision"]) == (1, 2)

    answer = client.post(f"{url}/rollout/abort/", {"reason": "looks wrong"}, format="json")
    assert answer.status_code == 202, answer.content
    assert answer.json()["state"] == "RolledBack"
    deployment = Deployment.objects.get(pk=d["id"])
    assert deployment.phase == "RolledBack" and deployment.template_generation == 1
    assert spec_of(d["id"]) == before
    assert AuditLog.objects.filter(action="deployment.rollout_abort").exists()
    assert client.post(f"{url}/rollout/promote/").status_code == 404  # nothing in progress any more

    # A second canary, promoted by hand.
    assert client.patch(f"{url}/", {"max_batch_size": 48}, format="json").status_code == 200
    assert Deployment.objects.get(pk=d["id"]).template_generation == 3  # revision numbers never repeat
    answer = client.post(f"{url}/rollout/promote/")
    assert answer.status_code == 202 and answer.json()["state"] == "Promoted" and answer.json()["weight"] == 100
    assert Rollout.objects.filter(deployment_id=d["id"]).count() == 2


def test_faults_are_for_platform_admins_where_the_installation_allows_them(
    tenant: Any, make_member: Any, client_for: Any, settings: Any
) -> None:
    owner = client_for(make_member(Role.OWNER, tenant))
    d = create(owner, tenant)
    url = f"/api/v1/deployments/{d['id']}/faults/"
    # A tenant cannot reach the switch, through this endpoint or a spec field.
    assert owner.post(url, {"error_rate": 0.3}, format="json").status_code == 404
    owner.patch(f"/api/v1/deployments/{d['id']}/", {"faults": {"error_rate": 1}}, format="json")
    assert Deployment.objects.get(pk=d["id"]).faults == {}

    admin = PlatformAdminFactory()
    platform = client_for(admin)
    settings.HANGAR_FAULT_INJECTION = False
    assert platform.post(url, {"error_rate": 0.3}, format="json").status_code == 403
    settings.HANGAR_FAULT_INJECTION = True
    assert platform.post(url, {"error_rate": 1.5}, format="json").status_code == 400
    answer = platform.post(url, {"error_rate": 0.3}, format="json")
    assert answer.status_code == 202, answer.content
    deployment = Deployment.objects.get(pk=d["id"])
    assert deployment.faults == {"error_rate": 0.3} and deployment.template_generation == 2
    assert Revision.objects.get(deployment=deployment, number=2).spec["faults"] == {"error_rate": 0.3}
    # The flags reach a replica only while the installation allows fault injection.
    from workers.rollout_strategy import fault_flags

    assert fault_flags(deployment) == ("--fault-error-rate", "0.3")
    settings.HANGAR_FAULT_INJECTION = False
    assert fault_flags(deployment) == ()
