"""Desired-state services: generation bookkeeping, validation, events and audit rows."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.audit.models import AuditLog
from controlplane.core.context import Actor
from controlplane.core.exceptions import Conflict, ValidationFailed
from controlplane.deployments import services
from controlplane.deployments.choices import DesiredState, Phase
from controlplane.deployments.models import Deployment, DeploymentEvent
from tests.factories import ModelFactory, TargetFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def actor() -> Actor:
    return Actor(user=UserFactory(), source_ip="10.1.2.3", via="api")


@pytest.fixture
def deployment(actor: Actor, django_capture_on_commit_callbacks: Any) -> Deployment:
    tenant = TenantFactory()
    with django_capture_on_commit_callbacks(execute=False):
        return services.deployment_create(
            actor=actor,
            tenant=tenant,
            model=ModelFactory(tenant=tenant),
            target=TargetFactory(tenant=tenant),
            data={"name": "chat", "replicas": 2, "max_replicas": 4},
        )


def test_create_records_event_audit_and_enqueues_after_commit(
    actor: Actor, django_capture_on_commit_callbacks: Any
) -> None:
    tenant = TenantFactory()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        dep = services.deployment_create(
            actor=actor,
            tenant=tenant,
            model=ModelFactory(tenant=tenant, name="tiny"),
            target=TargetFactory(tenant=tenant),
            data={"name": "chat", "replicas": 2, "max_replicas": 4},
        )
    assert dep.served_model_name == "tiny"
    assert (dep.generation, dep.template_generation, dep.phase) == (1, 1, Phase.PENDING)
    assert DeploymentEvent.objects.get(deployment=dep).reason == "Created"
    row = AuditLog.objects.get(action="deployment.create")
    assert (row.tenant_id, row.source_ip, row.actor_repr) == (tenant.pk, "10.1.2.3", actor.label)
    assert callbacks, "the reconcile must be enqueued on commit, not inside the transaction"


def test_scale_bumps_generation_but_not_template(actor: Actor, deployment: Deployment) -> None:
    updated = services.deployment_scale(actor=actor, deployment=deployment, replicas=3)
    assert (updated.replicas, updated.generation, updated.template_generation) == (3, 2, 1)


def test_runtime_option_change_rolls_replicas(actor: Actor, deployment: Deployment) -> None:
    updated = services.deployment_update(actor=actor, deployment=deployment, data={"dtype": "bfloat16"})
    assert (updated.generation, updated.template_generation) == (2, 2)
    assert DeploymentEvent.objects.filter(deployment=deployment, reason="SpecChanged").count() == 1


def test_unchanged_update_is_a_no_op(actor: Actor, deployment: Deployment) -> None:
    updated = services.deployment_update(actor=actor, deployment=deployment, data={"replicas": 2})
    assert updated.generation == 1
    assert DeploymentEvent.objects.filter(deployment=deployment).count() == 1


def test_restart_stop_start_delete(actor: Actor, deployment: Deployment) -> None:
    dep = services.deployment_restart(actor=actor, deployment=deployment)
    assert dep.template_generation == 2
    dep = services.deployment_stop(actor=actor, deployment=dep)
    assert dep.desired_state == DesiredState.STOPPED
    dep = services.deployment_start(actor=actor, deployment=dep)
    assert dep.desired_state == DesiredState.RUNNING and dep.replicas == 2
    dep = services.deployment_delete(actor=actor, deployment=dep)
    assert (dep.desired_state, dep.phase) == (DesiredState.DELETED, Phase.DELETING)
    with pytest.raises(Conflict):
        services.deployment_scale(actor=actor, deployment=dep, replicas=1)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"replicas": -1}, "replicas"),
        ({"replicas": "3"}, "replicas"),
        ({"replicas": True}, "replicas"),
        ({"replicas": 9}, "replicas"),  # above max_replicas
        ({"dtype": "float64"}, "dtype"),
        ({"quantization": "int4"}, "quantization"),
        ({"max_tokens_cap": 4096, "max_model_len": 1024}, "max_tokens_cap"),
        ({"tolerations": [{"operator": "Maybe"}]}, "tolerations"),
        ({"node_selector": {"a": 1}}, "node_selector"),
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas"),
    ],
)
def test_invalid_spec_is_a_field_error(actor: Actor, deployment: Deployment, data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        services.deployment_update(actor=actor, deployment=deployment, data=data)
    assert field in err.value.field_errors
    deployment.refresh_from_db()
    assert deployment.generation == 1


def test_served_name_unique_per_tenant_only(actor: Actor, deployment: Deployment) -> None:
    tenant = deployment.tenant
    with pytest.raises(ValidationFailed) as err:
        services.deployment_create(
            actor=actor,
            tenant=tenant,
            model=deployment.model,
            target=deployment.target,
            data={"name": "other", "served_model_name": deployment.served_model_name},
        )
    assert "served_model_name" in err.value.field_errors
    other = TenantFactory()
    twin = services.deployment_create(
        actor=actor,
        tenant=other,
        model=ModelFactory(tenant=other),
        target=TargetFactory(tenant=other),
        data={"name": "chat", "served_model_name": deployment.served_model_name},
    )
    assert twin.served_model_name == deployment.served_model_name


def test_model_of_another_tenant_is_refused(actor: Actor, deployment: Deployment) -> None:
    with pytest.raises(ValidationFailed):
        services.deployment_create(
            actor=actor,
            tenant=deployment.tenant,
            model=ModelFactory(),  # another tenant's
            target=deployment.target,
            data={"name": "x"},
        )


def test_model_sources_are_confined_to_the_tenants_folders(actor: Actor, tmp_path: Any, settings: Any) -> None:
    from controlplane.catalog.services import model_register

    root = (tmp_path / "models").resolve()
    settings.HANGAR_MODEL_ROOTS = [str(root)]
    tenant = TenantFactory()
    mine = root / tenant.slug / "m"
    mine.mkdir(parents=True)
    (mine / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(ValidationFailed) as err:
        model_register(actor=actor, tenant=tenant, name="x", source=str(outside))
    assert err.value.field_errors["source"] == [
        f"Model sources must be directories under {root}/{tenant.slug}/ or {root}/_shared/."
    ]
    with pytest.raises(ValidationFailed):  # ../ cannot climb out either
        model_register(actor=actor, tenant=tenant, name="x", source=str(root / tenant.slug / ".." / ".." / "elsewhere"))
    model = model_register(actor=actor, tenant=tenant, name="ok", source=str(mine))
    assert model.format == "safetensors"
    assert model.source == str(mine)
