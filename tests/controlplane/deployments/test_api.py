"""Targets, deployments, replicas and events endpoints."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.audit.models import AuditLog
from controlplane.core.exceptions import DomainError
from controlplane.core.tasks import CHECK_TARGET, RECONCILE_DEPLOYMENT
from controlplane.deployments.api import views as deployment_views
from controlplane.deployments.models import Deployment, Target
from controlplane.tenancy.choices import Role
from tests.controlplane.api_mixins import EndpointTests, PlatformEndpointTests, rows
from tests.factories import (
    DeploymentEventFactory,
    DeploymentFactory,
    MembershipFactory,
    ModelFactory,
    PlatformAdminFactory,
    ReplicaFactory,
    TargetFactory,
    TargetGrantFactory,
    TenantFactory,
)


def fake_logs(*, access: Any, replica_id: int, tail: int) -> str:
    return f"replica {replica_id}: last {tail} lines"


class BackendDown(DomainError):
    status = 503
    code = "backend_unavailable"


def logs_backend_down(*, access: Any, replica_id: int, tail: int) -> str:
    raise BackendDown("Could not read the logs: connection refused")


def logs_crash(*, access: Any, replica_id: int, tail: int) -> str:
    raise RuntimeError("socket closed")


class TestTargets(EndpointTests):
    """Tenants list and read the targets granted to them; nothing else."""

    endpoint = "targets"

    def make(self, tenant: Any) -> Any:
        return TargetFactory(tenant=tenant)

    def filters_reaching(self, obj: Any) -> list[dict[str, Any]]:
        return [{"tenant": obj.grants.get().tenant.slug}, {"kind": obj.kind}]

    def test_shows_name_kind_health_and_capacity_only(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        target = TargetFactory(
            tenant=tenant,
            kind="docker",
            docker_url="unix:///var/run/docker.sock",
            publish_host="10.1.2.3",
            kube_context="prod",
            model_volume={"type": "hostPath", "path": "/srv/models"},
            labels={"zone": "a"},
            gpu_inventory=[{"id": "0", "memory_mb": 81920}],
            health={
                "reachable": False,
                "status": "unreachable",
                "reason": "connection refused",
                "gpus": 0,
                "error": "HTTP/1.1 200 OK\r\nServer: metadata-service secret-body",
            },
        )
        body = client_for(make_member(Role.VIEWER, tenant)).get(f"/api/v1/targets/{target.pk}/").json()
        assert set(body) == {"id", "name", "kind", "health", "gpu_inventory", "labels"}
        assert body["health"] == {
            "status": "unreachable",
            "reason": "connection refused",
            "reachable": False,
            "gpus": 0,
            "gpus_declared": 1,
            "checked_at": None,
        }
        text = json.dumps(body)
        for hidden in ("docker.sock", "10.1.2.3", "prod", "/srv/models", "metadata-service", "secret-body"):
            assert hidden not in text

    def test_a_target_granted_to_two_of_my_tenants_is_listed_once(self, make_member: Any, client_for: Any) -> None:
        a, b = TenantFactory(), TenantFactory()
        user = make_member(Role.VIEWER, a)
        MembershipFactory(user=user, tenant=b, role=Role.OWNER)
        shared = TargetFactory(tenant=a)
        TargetGrantFactory(target=shared, tenant=b)
        only_b = TargetFactory(tenant=b)
        TargetFactory(tenant=TenantFactory())  # granted to someone else
        client = client_for(user)
        assert [row["id"] for row in rows(client.get("/api/v1/targets/"))] == sorted(
            [shared.pk, only_b.pk], key=lambda pk: Target.objects.get(pk=pk).name
        )
        assert {row["id"] for row in rows(client.get("/api/v1/targets/", {"tenant": a.slug}))} == {shared.pk}
        assert {row["id"] for row in rows(client.get("/api/v1/targets/", {"tenant": b.slug}))} == {shared.pk, only_b.pk}

    @pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
    def test_writes_are_refused_with_a_clear_answer(
        self, role: str, tenant: Any, make_member: Any, client_for: Any
    ) -> None:
        target = TargetFactory(tenant=tenant)
        client = client_for(make_member(role, tenant))
        for method, url in (
            ("post", "/api/v1/targets/"),
            ("patch", f"/api/v1/targets/{target.pk}/"),
            ("put", f"/api/v1/targets/{target.pk}/"),
            ("delete", f"/api/v1/targets/{target.pk}/"),
        ):
            response = getattr(client, method)(
                url, {"name": "mine", "docker_url": "tcp://10.0.0.1:2375"}, format="json"
            )
            assert response.status_code == 405, (method, response.content)
            assert "platform administrators" in response.json()["detail"]
        # There is no check action for tenants at all.
        assert client.post(f"/api/v1/targets/{target.pk}/check/").status_code == 404
        target.refresh_from_db()
        assert target.name != "mine" and target.docker_url == ""


class TestPlatformTargets(PlatformEndpointTests):
    endpoint = "platform/targets"
    detail_actions = {"check": ("post", {}, 202)}

    def make(self, tenant: Any) -> Any:
        return TargetFactory(tenant=tenant)

    def create_data(self, tenant: Any) -> dict[str, Any]:
        return {"name": "gpu-box", "kind": "docker", "docker_url": "unix:///var/run/docker.sock"}

    def update_data(self, obj: Any) -> dict[str, Any]:
        return {"labels": {"zone": "a"}, "publish_host": "10.0.0.5"}


class TestPlatformGrants(PlatformEndpointTests):
    endpoint = "platform/grants"

    def make(self, tenant: Any) -> Any:
        return TargetFactory(tenant=tenant).grants.get()

    def create_data(self, tenant: Any) -> dict[str, Any]:
        return {"target": TargetFactory().pk, "tenant": tenant.slug}


class TestDeployments(EndpointTests):
    endpoint = "deployments"
    delete_status = 202
    detail_actions = {
        "scale": ("post", {"replicas": 0}, 202),
        "stop": ("post", {}, 202),
        "start": ("post", {}, 202),
        "restart": ("post", {}, 202),
    }

    def make(self, tenant: Any) -> Any:
        return DeploymentFactory(tenant=tenant)

    def create_data(self, tenant: Any) -> dict[str, Any]:
        model = ModelFactory(tenant=tenant)
        target = TargetFactory(tenant=tenant)
        return {"tenant": tenant.slug, "name": "chat", "model": model.pk, "target": target.pk, "replicas": 2}

    def update_data(self, obj: Any) -> dict[str, Any]:
        return {"max_replicas": 4, "replicas": 3, "max_batch_size": 16}

    def filters_reaching(self, obj: Any) -> list[dict[str, Any]]:
        return [
            {"tenant": obj.tenant.slug},
            {"name": obj.name},
            {"model": obj.model.name},
            {"target": obj.target.name},
            {"served_model_name": obj.served_model_name},
        ]


@pytest.mark.django_db
class TestDeploymentRules:
    def test_create_sets_desired_state_and_enqueues(
        self, tenant: Any, make_member: Any, client_for: Any, sent_tasks: Any, django_capture_on_commit_callbacks: Any
    ) -> None:
        model, target = ModelFactory(tenant=tenant), TargetFactory(tenant=tenant)
        client = client_for(make_member(Role.OPERATOR, tenant))
        data = {"name": "chat", "model": model.pk, "target": target.pk, "replicas": 2, "dtype": "float16"}
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post("/api/v1/deployments/", data, format="json")
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["phase"] == "Pending" and body["replicas"] == 2 and body["max_replicas"] == 2
        assert body["model_name"] == model.name and body["served_model_name"] == model.name
        assert (RECONCILE_DEPLOYMENT, [body["id"]]) in sent_tasks

    def test_model_of_another_tenant_is_a_field_error(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        other = TenantFactory()
        foreign_model, foreign_target = ModelFactory(tenant=other), TargetFactory(tenant=other)
        client = client_for(make_member(Role.OWNER, tenant))
        data = {"name": "x", "model": foreign_model.pk, "target": foreign_target.pk}
        response = client.post("/api/v1/deployments/", data, format="json")
        assert response.status_code == 400
        errors = response.json()["errors"]
        assert errors["model"] == [f"No model with id {foreign_model.pk} in tenant {tenant.slug!r}."]
        assert set(errors) == {"model", "target"}
        # A missing id reads exactly the same: nothing about the other tenant leaks.
        missing = client.post("/api/v1/deployments/", data | {"model": 10**9}, format="json").json()
        assert missing["errors"]["model"] == [f"No model with id {10**9} in tenant {tenant.slug!r}."]

    def test_spec_errors_name_the_fields(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        model, target = ModelFactory(tenant=tenant), TargetFactory(tenant=tenant)
        client = client_for(make_member(Role.OPERATOR, tenant))
        data = {"name": "Bad Name", "model": model.pk, "target": target.pk, "replicas": 100, "dtype": "int4"}
        errors = client.post("/api/v1/deployments/", data, format="json").json()["errors"]
        assert set(errors) == {"replicas", "dtype"}  # type and range checks first
        data = {"name": "Bad Name", "model": model.pk, "target": target.pk}
        errors = client.post("/api/v1/deployments/", data, format="json").json()["errors"]
        assert "name" in errors

    def test_delete_marks_deleting(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        deployment = DeploymentFactory(tenant=tenant)
        response = client_for(make_member(Role.OPERATOR, tenant)).delete(f"/api/v1/deployments/{deployment.pk}/")
        assert response.status_code == 202
        assert response.json()["phase"] == "Deleting"
        deployment.refresh_from_db()
        assert deployment.desired_state == "deleted"
        # Further changes are refused while it is being deleted.
        again = client_for(make_member(Role.OPERATOR, tenant)).post(
            f"/api/v1/deployments/{deployment.pk}/scale/", {"replicas": 1}, format="json"
        )
        assert again.status_code == 409

    def test_scale_stop_start(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        deployment = DeploymentFactory(tenant=tenant, max_replicas=4)
        client = client_for(make_member(Role.OPERATOR, tenant))
        url = f"/api/v1/deployments/{deployment.pk}/"
        assert client.post(url + "scale/", {"replicas": 3}, format="json").json()["replicas"] == 3
        too_many = client.post(url + "scale/", {"replicas": 5}, format="json")
        assert too_many.status_code == 400 and "replicas" in too_many.json()["errors"]
        assert client.post(url + "stop/").json()["desired_state"] == "stopped"
        assert client.post(url + "start/").json()["desired_state"] == "running"
        generation = Deployment.objects.get(pk=deployment.pk).generation
        assert client.post(url + "restart/").json()["generation"] == generation + 1

    def test_patch_switches_model_within_tenant_only(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        deployment = DeploymentFactory(tenant=tenant)
        client = client_for(make_member(Role.OPERATOR, tenant))
        url = f"/api/v1/deployments/{deployment.pk}/"
        foreign = ModelFactory(tenant=TenantFactory())
        assert client.patch(url, {"model": foreign.pk}, format="json").status_code == 400
        mine = ModelFactory(tenant=tenant)
        assert client.patch(url, {"model": mine.pk}, format="json").json()["model"] == mine.pk

    def test_read_only_and_unknown_fields_are_refused(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        deployment = DeploymentFactory(tenant=tenant)
        response = client_for(make_member(Role.OPERATOR, tenant)).patch(
            f"/api/v1/deployments/{deployment.pk}/", {"phase": "Running", "replica": 2}, format="json"
        )
        assert response.status_code == 400
        assert response.json()["errors"] == {"phase": ["This field is read-only."], "replica": ["Unknown field."]}

    def test_target_check_enqueues_and_is_audited(
        self, tenant: Any, client_for: Any, sent_tasks: Any, django_capture_on_commit_callbacks: Any
    ) -> None:
        target = TargetFactory(tenant=tenant)
        admin = PlatformAdminFactory()
        with django_capture_on_commit_callbacks(execute=True):
            response = client_for(admin).post(f"/api/v1/platform/targets/{target.pk}/check/")
        assert response.status_code == 202
        assert sent_tasks == [(CHECK_TARGET, [target.pk, admin.username])]
        assert AuditLog.objects.filter(action="target.check", object_id=str(target.pk)).count() == 1


class TestReplicas(EndpointTests):
    endpoint = "replicas"
    detail_actions = {"logs": ("get", {}, 200)}

    @pytest.fixture(autouse=True)
    def _fake_logs(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(deployment_views, "REPLICA_LOGS", f"{__name__}.fake_logs")

    def make(self, tenant: Any) -> Any:
        return ReplicaFactory(deployment=DeploymentFactory(tenant=tenant))

    def make_many(self, tenant: Any, count: int, user: Any) -> None:
        deployment = DeploymentFactory(tenant=tenant)
        for _ in range(count):
            ReplicaFactory(deployment=deployment)

    def filters_reaching(self, obj: Any) -> list[dict[str, Any]]:
        return [
            {"deployment": obj.deployment_id},
            {"state": obj.state},
            {"deployment": obj.deployment_id, "state": obj.state},
        ]


@pytest.mark.django_db
class TestReplicaLogs:
    def test_logs_tail(self, tenant: Any, make_member: Any, client_for: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(deployment_views, "REPLICA_LOGS", f"{__name__}.fake_logs")
        replica = ReplicaFactory(deployment=DeploymentFactory(tenant=tenant))
        client = client_for(make_member(Role.VIEWER, tenant))
        body = client.get(f"/api/v1/replicas/{replica.pk}/logs/", {"tail": 7}).json()
        assert body == {"replica": replica.pk, "tail": 7, "logs": f"replica {replica.pk}: last 7 lines"}
        for bad in ("0", "x", "999999"):
            response = client.get(f"/api/v1/replicas/{replica.pk}/logs/", {"tail": bad})
            assert response.status_code == 400 and "tail" in response.json()["errors"]

    def test_logs_unavailable_is_501(
        self, tenant: Any, make_member: Any, client_for: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(deployment_views, "REPLICA_LOGS", "workers.no_such_module.replica_logs")
        replica = ReplicaFactory(deployment=DeploymentFactory(tenant=tenant))
        response = client_for(make_member(Role.VIEWER, tenant)).get(f"/api/v1/replicas/{replica.pk}/logs/")
        assert response.status_code == 501
        assert "not available" in response.json()["detail"]


@pytest.mark.parametrize(("function", "status"), [("logs_backend_down", 503), ("logs_crash", 502)])
@pytest.mark.django_db
def test_logs_backend_errors(
    function: str, status: int, tenant: Any, make_member: Any, client_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deployment_views, "REPLICA_LOGS", f"{__name__}.{function}")
    replica = ReplicaFactory(deployment=DeploymentFactory(tenant=tenant))
    response = client_for(make_member(Role.VIEWER, tenant)).get(f"/api/v1/replicas/{replica.pk}/logs/")
    assert response.status_code == status
    assert "logs" in response.json()["detail"]


class TestEvents(EndpointTests):
    endpoint = "events"

    def make(self, tenant: Any) -> Any:
        return DeploymentEventFactory(tenant=tenant)

    def make_many(self, tenant: Any, count: int, user: Any) -> None:
        deployment = DeploymentFactory(tenant=tenant)
        for _ in range(count):
            DeploymentEventFactory(tenant=tenant, deployment=deployment)

    def filters_reaching(self, obj: Any) -> list[dict[str, Any]]:
        return [{"deployment": obj.deployment_id}, {"type": obj.type}, {"reason": obj.reason}]


@pytest.mark.django_db
def test_events_filter_and_order(tenant: Any, make_member: Any, client_for: Any) -> None:
    deployment = DeploymentFactory(tenant=tenant)
    DeploymentEventFactory(tenant=tenant, deployment=deployment, reason="A")
    DeploymentEventFactory(tenant=tenant, deployment=deployment, reason="B", type="Warning")
    DeploymentEventFactory(tenant=tenant, reason="C")
    client = client_for(make_member(Role.VIEWER, tenant))
    listed = rows(client.get("/api/v1/events/", {"deployment": deployment.pk}))
    assert [e["reason"] for e in listed] == ["B", "A"]  # newest first
    assert [e["reason"] for e in rows(client.get("/api/v1/events/", {"type": "Warning"}))] == ["B"]
    ordered = rows(client.get("/api/v1/events/", {"deployment": deployment.pk, "ordering": "reason"}))
    assert [e["reason"] for e in ordered] == ["A", "B"]
    bad = client.get("/api/v1/events/", {"deployment": "abc", "type": "Loud"})
    assert bad.status_code == 400 and set(bad.json()["errors"]) == {"deployment", "type"}


@pytest.mark.django_db
def test_logs_use_the_engine(tenant: Any, make_member: Any, client_for: Any) -> None:
    """The real workers.logs.replica_logs is wired in (a replica not started yet has no logs)."""
    pytest.importorskip("workers.logs")
    replica = ReplicaFactory(deployment=DeploymentFactory(tenant=tenant), backend_id="")
    response = client_for(make_member(Role.VIEWER, tenant)).get(f"/api/v1/replicas/{replica.pk}/logs/", {"tail": 5})
    assert response.status_code == 200, response.content
    assert response.json() == {"replica": replica.pk, "tail": 5, "logs": ""}
