"""Writes of desired state: targets and deployments.

Every write validates, saves, bumps ``generation``, appends an event and an audit row, and
enqueues a reconcile after commit. No backend (Docker, Kubernetes, processes) is touched here.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F

from controlplane.audit.services import audit_record
from controlplane.catalog.models import Model
from controlplane.core.context import Actor
from controlplane.core.exceptions import Conflict, ValidationFailed
from controlplane.core.realtime import deployment_group, publish_on_commit, tenant_group
from controlplane.core.tasks import CHECK_TARGET, RECONCILE_DEPLOYMENT, enqueue_on_commit
from controlplane.deployments.choices import DesiredState, Phase, TargetKind
from controlplane.deployments.events import event_emit
from controlplane.deployments.models import Deployment, Target
from controlplane.deployments.validation import validate_deployment_fields, validate_target_fields
from controlplane.tenancy.models import Tenant

# Changing one of these replaces the replicas (rolling); other spec fields do not.
TEMPLATE_FIELDS = {
    "model",
    "dtype",
    "quantization",
    "max_batch_size",
    "max_model_len",
    "gpus",
    "gpu_ids",
    "cpus",
    "memory_mb",
    "tensor_parallel",
    "node_selector",
    "tolerations",
    "host_port",
}
SPEC_FIELDS = TEMPLATE_FIELDS | {
    "replicas",
    "min_replicas",
    "max_replicas",
    "max_tokens_cap",
    "autoscale",
    "target_concurrency",
    "scale_to_zero_idle_seconds",
    "served_model_name",
}
TARGET_FIELDS = {
    "name",
    "kind",
    "docker_url",
    "kubeconfig_path",
    "kube_context",
    "kube_namespace",
    "model_volume",
    "node_selector",
    "tolerations",
    "labels",
    "gpu_inventory",
}


def _push_state(deployment: Deployment) -> None:
    payload = {
        "kind": "deployment",
        "deployment": deployment.pk,
        "phase": deployment.phase,
        "replicas": deployment.replicas,
        "ready_replicas": deployment.ready_replicas,
        "generation": deployment.generation,
        "desired_state": deployment.desired_state,
    }
    publish_on_commit(deployment_group(deployment.pk), payload)
    publish_on_commit(tenant_group(deployment.tenant_id), payload)


def _after_spec_change(
    deployment: Deployment, *, actor: Actor, action: str, reason: str, message: str, changes: dict[str, Any]
) -> Deployment:
    deployment.refresh_from_db()
    event_emit(deployment=deployment, reason=reason, message=message, actor=actor.label)
    audit_record(actor=actor, action=action, obj=deployment, changes=changes)
    enqueue_on_commit(RECONCILE_DEPLOYMENT, deployment.pk)
    _push_state(deployment)
    return deployment


# ----------------------------------------------------------------------------- targets


@transaction.atomic
def target_create(*, actor: Actor, tenant: Tenant, data: dict[str, Any]) -> Target:
    clean = validate_target_fields({k: v for k, v in data.items() if k in TARGET_FIELDS})
    name = clean.get("name", "")
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise ValidationFailed("Invalid target.", field_errors={"name": ["Give a name of 1-100 characters."]})
    if Target.objects.filter(tenant=tenant, name=name).exists():
        raise ValidationFailed("Name taken.", field_errors={"name": [f"A target named {name!r} exists."]})
    kind = clean.get("kind", TargetKind.LOCAL)
    if kind == TargetKind.DOCKER and not clean.get("docker_url"):
        clean["docker_url"] = "unix:///var/run/docker.sock"
    target = Target.objects.create(tenant=tenant, **clean)
    audit_record(actor=actor, action="target.create", obj=target, changes={"kind": kind})
    enqueue_on_commit(CHECK_TARGET, target.pk)
    return target


@transaction.atomic
def target_update(*, actor: Actor, target: Target, data: dict[str, Any]) -> Target:
    clean = validate_target_fields({k: v for k, v in data.items() if k in TARGET_FIELDS - {"kind"}})
    if (
        "name" in clean
        and Target.objects.filter(tenant_id=target.tenant_id, name=clean["name"]).exclude(pk=target.pk).exists()
    ):
        raise ValidationFailed("Name taken.", field_errors={"name": ["A target with this name exists."]})
    changes = {k: v for k, v in clean.items() if getattr(target, k) != v}
    for key, value in changes.items():
        setattr(target, key, value)
    if changes:
        target.save(update_fields=[*changes, "updated_at"])
        audit_record(actor=actor, action="target.update", obj=target, changes=changes)
        enqueue_on_commit(CHECK_TARGET, target.pk)
    return target


@transaction.atomic
def target_delete(*, actor: Actor, target: Target) -> None:
    if target.deployments.exists():
        raise Conflict("Deployments still use this target; delete them first.")
    audit_record(actor=actor, action="target.delete", obj=target)
    target.delete()


def target_check(*, target: Target) -> None:
    """Ask a worker to refresh the target's health (ping, version, GPUs)."""
    enqueue_on_commit(CHECK_TARGET, target.pk)


# ----------------------------------------------------------------------------- deployments


@transaction.atomic
def deployment_create(
    *, actor: Actor, tenant: Tenant, model: Model, target: Target, data: dict[str, Any]
) -> Deployment:
    """Record a new deployment (desired state) and ask a worker to make it so."""
    if model.tenant_id != tenant.pk or target.tenant_id != tenant.pk:
        raise ValidationFailed("Model and target must belong to the tenant.")
    fields = {k: v for k, v in data.items() if k in SPEC_FIELDS - {"model"} or k == "name"}
    fields.setdefault("served_model_name", model.name)
    clean = validate_deployment_fields(fields)
    if "name" not in clean:
        raise ValidationFailed("Invalid deployment spec.", field_errors={"name": ["This field is required."]})
    replicas = clean.get("replicas", 1)
    clean.setdefault("min_replicas", min(replicas, 1))
    clean.setdefault("max_replicas", max(replicas, clean["min_replicas"], 1))
    _check_spec(clean, model=model)
    if Deployment.objects.filter(tenant=tenant, name=clean["name"]).exists():
        raise ValidationFailed("Name taken.", field_errors={"name": [f"A deployment named {clean['name']!r} exists."]})
    if Deployment.objects.filter(tenant=tenant, served_model_name=clean["served_model_name"]).exists():
        raise ValidationFailed(
            "Served name taken.",
            field_errors={"served_model_name": ["Another deployment already serves this model name."]},
        )
    deployment = Deployment.objects.create(tenant=tenant, model=model, target=target, **clean)
    return _after_spec_change(
        deployment,
        actor=actor,
        action="deployment.create",
        reason="Created",
        message=f"{deployment.replicas} replica(s) of {model.name} on {target.name}",
        changes={"spec": dict(clean)},
    )


def _check_spec(spec: dict[str, Any], *, model: Model) -> None:
    errors: dict[str, list[str]] = {}
    replicas = spec.get("replicas")
    if replicas is not None and spec.get("max_replicas") is not None and replicas > spec["max_replicas"]:
        errors["replicas"] = [f"Must not exceed max_replicas ({spec['max_replicas']})."]
    if (
        replicas is not None
        and spec.get("min_replicas") is not None
        and replicas < spec["min_replicas"]
        and replicas != 0
    ):
        errors["replicas"] = [f"Must be at least min_replicas ({spec['min_replicas']}) or 0."]
    if spec.get("max_tokens_cap") and spec.get("max_model_len") and spec["max_tokens_cap"] > spec["max_model_len"]:
        errors["max_tokens_cap"] = ["Must not exceed max_model_len."]
    if spec.get("dtype") and model.dtype_options and spec["dtype"] not in model.dtype_options:
        errors["dtype"] = [f"This model allows {model.dtype_options}."]
    if errors:
        raise ValidationFailed("Invalid deployment spec.", field_errors=errors)


def _lock(deployment: Deployment) -> Deployment:
    return Deployment.objects.select_for_update().get(pk=deployment.pk)


def _refuse_if_deleting(deployment: Deployment) -> None:
    if deployment.desired_state == DesiredState.DELETED:
        raise Conflict("This deployment is being deleted.")


@transaction.atomic
def deployment_update(*, actor: Actor, deployment: Deployment, data: dict[str, Any]) -> Deployment:
    """Change the spec; template fields trigger a rolling replacement of the replicas."""
    deployment = _lock(deployment)
    _refuse_if_deleting(deployment)
    model = deployment.model
    incoming = {k: v for k, v in data.items() if k in SPEC_FIELDS}
    if "model" in incoming:
        new_model = incoming.pop("model")
        if not isinstance(new_model, Model) or new_model.tenant_id != deployment.tenant_id:
            raise ValidationFailed("Invalid deployment spec.", field_errors={"model": ["Unknown model."]})
        model = new_model
    clean = validate_deployment_fields(incoming)
    merged = {f: getattr(deployment, f) for f in SPEC_FIELDS - {"model"}} | clean
    _check_spec(merged, model=model)
    if merged["min_replicas"] > merged["max_replicas"]:
        raise ValidationFailed(
            "Invalid deployment spec.", field_errors={"min_replicas": ["Must not exceed max_replicas."]}
        )
    if (
        "served_model_name" in clean
        and Deployment.objects.filter(tenant_id=deployment.tenant_id, served_model_name=clean["served_model_name"])
        .exclude(pk=deployment.pk)
        .exists()
    ):
        raise ValidationFailed(
            "Served name taken.",
            field_errors={"served_model_name": ["Another deployment already serves this model name."]},
        )
    changes: dict[str, Any] = {k: v for k, v in clean.items() if getattr(deployment, k) != v}
    if model.pk != deployment.model_id:
        changes["model"] = model
    if not changes:
        return deployment
    for key, value in changes.items():
        setattr(deployment, key, value)
    update = {"generation": F("generation") + 1}
    rolling = bool(TEMPLATE_FIELDS & set(changes))
    if rolling:
        update["template_generation"] = F("template_generation") + 1
    deployment.save(update_fields=[*changes, "updated_at"])
    Deployment.objects.filter(pk=deployment.pk).update(**update)
    shown = {k: (v.name if isinstance(v, Model) else v) for k, v in changes.items()}
    return _after_spec_change(
        deployment,
        actor=actor,
        action="deployment.update",
        reason="SpecChanged",
        message=("Rolling update: " if rolling else "Updated: ") + ", ".join(f"{k}={v}" for k, v in shown.items()),
        changes=shown,
    )


@transaction.atomic
def deployment_scale(*, actor: Actor, deployment: Deployment, replicas: int) -> Deployment:
    deployment = _lock(deployment)
    _refuse_if_deleting(deployment)
    clean = validate_deployment_fields({"replicas": replicas})
    replicas = clean["replicas"]
    if replicas > deployment.max_replicas:
        raise ValidationFailed(
            "Invalid scale.", field_errors={"replicas": [f"Must not exceed max_replicas ({deployment.max_replicas})."]}
        )
    if replicas == deployment.replicas and deployment.desired_state == DesiredState.RUNNING:
        return deployment
    old = deployment.replicas
    Deployment.objects.filter(pk=deployment.pk).update(
        replicas=replicas, desired_state=DesiredState.RUNNING, generation=F("generation") + 1
    )
    return _after_spec_change(
        deployment,
        actor=actor,
        action="deployment.scale",
        reason="Scaled",
        message=f"Replicas {old} → {replicas}",
        changes={"replicas": [old, replicas]},
    )


@transaction.atomic
def deployment_stop(*, actor: Actor, deployment: Deployment) -> Deployment:
    deployment = _lock(deployment)
    _refuse_if_deleting(deployment)
    if deployment.desired_state == DesiredState.STOPPED:
        return deployment
    Deployment.objects.filter(pk=deployment.pk).update(
        desired_state=DesiredState.STOPPED, generation=F("generation") + 1
    )
    return _after_spec_change(
        deployment,
        actor=actor,
        action="deployment.stop",
        reason="StopRequested",
        message="Stopping all replicas",
        changes={},
    )


@transaction.atomic
def deployment_start(*, actor: Actor, deployment: Deployment) -> Deployment:
    deployment = _lock(deployment)
    _refuse_if_deleting(deployment)
    if deployment.desired_state == DesiredState.RUNNING and deployment.replicas > 0:
        return deployment
    replicas = deployment.replicas or max(deployment.min_replicas, 1)
    Deployment.objects.filter(pk=deployment.pk).update(
        desired_state=DesiredState.RUNNING, replicas=replicas, generation=F("generation") + 1
    )
    return _after_spec_change(
        deployment,
        actor=actor,
        action="deployment.start",
        reason="StartRequested",
        message=f"Starting {replicas} replica(s)",
        changes={},
    )


@transaction.atomic
def deployment_restart(*, actor: Actor, deployment: Deployment) -> Deployment:
    deployment = _lock(deployment)
    _refuse_if_deleting(deployment)
    Deployment.objects.filter(pk=deployment.pk).update(
        generation=F("generation") + 1, template_generation=F("template_generation") + 1
    )
    return _after_spec_change(
        deployment,
        actor=actor,
        action="deployment.restart",
        reason="RestartRequested",
        message="Rolling restart of every replica",
        changes={},
    )


@transaction.atomic
def deployment_delete(*, actor: Actor, deployment: Deployment) -> Deployment:
    """Mark for deletion; the reconciler removes every backend resource, then the row."""
    deployment = _lock(deployment)
    if deployment.desired_state == DesiredState.DELETED:
        return deployment
    Deployment.objects.filter(pk=deployment.pk).update(
        desired_state=DesiredState.DELETED, phase=Phase.DELETING, generation=F("generation") + 1
    )
    return _after_spec_change(
        deployment,
        actor=actor,
        action="deployment.delete",
        reason="DeleteRequested",
        message="Removing every replica and backend resource",
        changes={},
    )
