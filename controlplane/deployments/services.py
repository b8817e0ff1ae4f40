"""Writes of desired state: targets, grants and deployments.

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
from controlplane.core.crypto import CredentialsUnreadable, decrypt_json, encrypt_json, rotate
from controlplane.core.exceptions import Conflict, ValidationFailed
from controlplane.core.realtime import deployment_group, publish_on_commit, tenant_group
from controlplane.core.tasks import CHECK_TARGET, RECONCILE_DEPLOYMENT, enqueue_on_commit
from controlplane.deployments import quota, revisions
from controlplane.deployments.choices import DesiredState, Phase, TargetKind
from controlplane.deployments.events import event_emit
from controlplane.deployments.models import Deployment, Target, TargetGrant
from controlplane.deployments.spec import SPEC, TEMPLATE_SPEC_FIELDS
from controlplane.deployments.validation import DNS_LABEL, TARGET_SETTINGS, validate_deployment_fields, validate_target
from controlplane.tenancy.models import Tenant

# Changing one of these replaces the replicas (rolling); other spec fields do not. The model is
# not a spec column (a foreign key chosen at creation) but replaces the replicas too.
TEMPLATE_FIELDS = TEMPLATE_SPEC_FIELDS | {"model"}
SPEC_FIELDS = TEMPLATE_FIELDS | {f.name for f in SPEC}


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
# Platform resources: only platform admins call these (the API and dashboard check that first).
# Credentials arrive as plain fields (CREDENTIAL_FIELDS), are stored encrypted, and only their
# names ever reach an audit row.


def _target_defaults() -> dict[str, Any]:
    fields = {f.name: f for f in Target._meta.concrete_fields}
    return {name: fields[name].get_default() for name in TARGET_SETTINGS}


def _stored_credentials(target: Target) -> dict[str, str]:
    # Unreadable credentials (a key removed too early) count as none: the platform admin
    # uploads them again, and validation says which ones are missing.
    try:
        return decrypt_json(target.credentials)
    except CredentialsUnreadable:
        return {}


def _refuse_taken_name(name: str, *, exclude: int = 0) -> None:
    if Target.objects.filter(name=name).exclude(pk=exclude).exists():
        raise ValidationFailed("Name taken.", field_errors={"name": [f"A target named {name!r} exists."]})


def _audited(fields: dict[str, Any], credentials: tuple[str, ...]) -> dict[str, Any]:
    """What an audit row records of a target change: settings as set, credentials by name only."""
    changes: dict[str, Any] = dict(fields)
    if credentials:
        changes["credentials"] = list(credentials)
    return changes


@transaction.atomic
def target_create(*, actor: Actor, data: dict[str, Any]) -> Target:
    """Add a platform target (granted to no tenant yet) and queue its first health check."""
    if not data.get("name"):
        raise ValidationFailed("Invalid target.", field_errors={"name": ["This field is required."]})
    change = validate_target(data, current=_target_defaults(), current_credentials={})
    _refuse_taken_name(change.fields["name"])
    target = Target.objects.create(**change.fields, credentials=encrypt_json(change.credentials))
    shown = {k: v for k, v in change.fields.items() if k in data or k == "kind"}
    audit_record(actor=actor, action="target.create", obj=target, changes=_audited(shown, change.credentials_changed))
    enqueue_on_commit(CHECK_TARGET, target.pk)
    return target


@transaction.atomic
def target_update(*, actor: Actor, target: Target, data: dict[str, Any]) -> Target:
    """Change settings or credentials (the kind is fixed); a change queues a health check."""
    target = Target.objects.select_for_update(no_key=True).get(pk=target.pk)
    if "kind" in data and data["kind"] != target.kind:
        raise ValidationFailed("Invalid target.", field_errors={"kind": ["The kind of a target cannot change."]})
    current = {name: getattr(target, name) for name in TARGET_SETTINGS}
    stored = _stored_credentials(target)
    change = validate_target(data, current=current, current_credentials=stored)
    if change.fields["name"] != target.name:
        _refuse_taken_name(change.fields["name"], exclude=target.pk)
    changes = {k: v for k, v in change.fields.items() if current[k] != v}
    if not changes and not change.credentials_changed:
        return target
    for key, value in changes.items():
        setattr(target, key, value)
    update_fields = [*changes, "updated_at"]
    if change.credentials_changed:
        target.credentials = encrypt_json(change.credentials)
        update_fields.append("credentials")
    target.save(update_fields=update_fields)
    audit_record(actor=actor, action="target.update", obj=target, changes=_audited(changes, change.credentials_changed))
    enqueue_on_commit(CHECK_TARGET, target.pk)
    return target


@transaction.atomic
def target_delete(*, actor: Actor, target: Target) -> None:
    """Remove a target and its grants; refused while any deployment uses it."""
    # Grants first, then the target: the order deployment_create takes them in (grant, then the
    # target's key for the new row), so a create in flight makes this wait and then refuse.
    list(TargetGrant.objects.select_for_update().filter(target_id=target.pk).values_list("pk", flat=True))
    target = Target.objects.select_for_update().get(pk=target.pk)
    if target.deployments.exists():
        raise Conflict("Deployments still use this target; delete them first.")
    tenants = list(target.grants.values_list("tenant__slug", flat=True))
    audit_record(actor=actor, action="target.delete", obj=target, changes={"granted_to": tenants} if tenants else {})
    target.delete()


@transaction.atomic
def target_check(*, actor: Actor, target: Target) -> None:
    """Ask a worker to refresh the target's health (reachability, version, GPUs). The request is
    audited here, its outcome by the worker (``target.checked``, naming who asked)."""
    audit_record(actor=actor, action="target.check", obj=target)
    enqueue_on_commit(CHECK_TARGET, target.pk, actor.label)


@transaction.atomic
def target_grant(*, actor: Actor, target: Target, tenant: Tenant, namespace: str = "") -> TargetGrant:
    """Let ``tenant`` deploy onto ``target``; on Kubernetes, ``namespace`` (if set) replaces the
    target's namespace for this tenant's replicas."""
    if namespace and target.kind != TargetKind.KUBERNETES:
        raise ValidationFailed("Invalid grant.", field_errors={"namespace": ["Only for Kubernetes targets."]})
    if namespace and not DNS_LABEL.match(namespace):
        raise ValidationFailed(
            "Invalid grant.", field_errors={"namespace": ["Not a valid Kubernetes namespace name (a DNS label)."]}
        )
    if TargetGrant.objects.filter(target=target, tenant=tenant).exists():
        raise Conflict(f"Target {target.name!r} is already granted to tenant {tenant.slug!r}.")
    grant = TargetGrant.objects.create(target=target, tenant=tenant, namespace=namespace)
    changes = {"target": target.name, "tenant": tenant.slug} | ({"namespace": namespace} if namespace else {})
    audit_record(actor=actor, action="target.grant", obj=grant, changes=changes)
    return grant


@transaction.atomic
def target_revoke(*, actor: Actor, grant: TargetGrant) -> None:
    """Take a target back from a tenant; refused (409) while deployments of the tenant use it,
    so nothing already running loses its target."""
    # The grant row is locked here and by deployment_create, so a deployment cannot be created
    # on a grant that is being revoked.
    grant = TargetGrant.objects.select_for_update().select_related("target", "tenant").get(pk=grant.pk)
    if Deployment.objects.filter(target_id=grant.target_id, tenant_id=grant.tenant_id).exists():
        raise Conflict(
            f"Deployments of tenant {grant.tenant.slug!r} still use target {grant.target.name!r}; delete them first."
        )
    audit_record(
        actor=actor,
        action="target.revoke",
        obj=grant,
        changes={"target": grant.target.name, "tenant": grant.tenant.slug},
    )
    grant.delete()


def _lock_grant(*, target_id: int, tenant_id: int) -> TargetGrant | None:
    return TargetGrant.objects.select_for_update().filter(target_id=target_id, tenant_id=tenant_id).first()


# ----------------------------------------------------------------------------- deployments


@transaction.atomic
def deployment_create(
    *, actor: Actor, tenant: Tenant, model: Model, target: Target, data: dict[str, Any]
) -> Deployment:
    """Record a new deployment (desired state) and ask a worker to make it so, within the
    tenant's quota."""
    if model.tenant_id != tenant.pk or _lock_grant(target_id=target.pk, tenant_id=tenant.pk) is None:
        raise ValidationFailed("The model must belong to the tenant and the target be granted to it.")
    fields = {k: v for k, v in data.items() if k in SPEC_FIELDS - {"model"} or k == "name"}
    fields.setdefault("served_model_name", model.name)
    clean = validate_deployment_fields(fields)
    if "name" not in clean:
        raise ValidationFailed("Invalid deployment spec.", field_errors={"name": ["This field is required."]})
    replicas = clean.get("replicas", 1)
    clean.setdefault("min_replicas", min(replicas, 1))
    clean.setdefault("max_replicas", max(replicas, clean["min_replicas"], 1))
    _check_spec(clean, model=model)
    _check_placement(clean, target=target)
    quota.lock_tenant(tenant.pk)
    if Deployment.objects.filter(tenant=tenant, name=clean["name"]).exists():
        raise ValidationFailed("Name taken.", field_errors={"name": [f"A deployment named {clean['name']!r} exists."]})
    if Deployment.objects.filter(tenant=tenant, served_model_name=clean["served_model_name"]).exists():
        raise ValidationFailed(
            "Served name taken.",
            field_errors={"served_model_name": ["Another deployment already serves this model name."]},
        )
    deployment = Deployment(tenant=tenant, model=model, target=target, **clean)
    quota.admit(tenant, exclude_deployment_id=None, new_cost=quota.deployment_cost(deployment, target=target))
    deployment.save(force_insert=True)
    revisions.revision_new(deployment=deployment, actor=actor, reason="Created", first=True)
    return _after_spec_change(
        deployment,
        actor=actor,
        action="deployment.create",
        reason="Created",
        message=f"{deployment.replicas} replica(s) of {model.name} on {target.name}",
        changes={"spec": dict(clean)},
    )


def _check_placement(spec: dict[str, Any], *, target: Target) -> None:
    """A deployment may narrow where its pods go, never move them off the target's node pool:
    a node label the target pins cannot be set to another value."""
    pinned = target.node_selector or {}
    clashes = sorted(k for k, v in (spec.get("node_selector") or {}).items() if k in pinned and pinned[k] != v)
    if clashes:
        raise ValidationFailed(
            "Invalid deployment spec.",
            field_errors={"node_selector": [f"The target pins {', '.join(clashes)}; add other labels instead."]},
        )


def _check_spec(spec: dict[str, Any], *, model: Model) -> None:
    errors: dict[str, list[str]] = {}
    replicas = spec.get("replicas")
    if replicas is not None and spec.get("max_replicas") is not None and replicas > spec["max_replicas"]:
        errors["replicas"] = [f"Must not exceed max_replicas ({spec['max_replicas']})."]
    if (
        spec.get("min_replicas") is not None
        and spec.get("max_replicas") is not None
        and spec["min_replicas"] > spec["max_replicas"]
    ):
        errors["min_replicas"] = ["Must not exceed max_replicas."]
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
    """Lock the tenant row, then the deployment row: the one lock order of every deployment
    write, so two of them can never wait for each other (see ``quota.lock_tenant``)."""
    quota.lock_tenant(deployment.tenant_id)
    locked = Deployment.objects.select_for_update().get(pk=deployment.pk)
    revisions.ensure_revision(locked)
    return locked


def _admit(deployment: Deployment) -> None:
    """Refuse the in-memory (changed, unsaved) state of a locked deployment if it does not fit
    the tenant's quota."""
    quota.admit(deployment.tenant_id, exclude_deployment_id=deployment.pk, new_cost=quota.deployment_cost(deployment))


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
    change_reason = str(data.get("change_reason") or "")[:500]
    if "model" in incoming:
        new_model = incoming.pop("model")
        if not isinstance(new_model, Model) or new_model.tenant_id != deployment.tenant_id:
            raise ValidationFailed("Invalid deployment spec.", field_errors={"model": ["Unknown model."]})
        model = new_model
    clean = validate_deployment_fields(incoming)
    merged = {f: getattr(deployment, f) for f in SPEC_FIELDS - {"model"}} | clean
    _check_spec(merged, model=model)
    _check_placement(clean, target=deployment.target)
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
    _admit(deployment)
    rolling = bool(TEMPLATE_FIELDS & set(changes))
    deployment.save(update_fields=[*changes, "updated_at"])
    Deployment.objects.filter(pk=deployment.pk).update(generation=F("generation") + 1)
    shown = {k: (v.name if isinstance(v, Model) else v) for k, v in changes.items()}
    if rolling:  # a new revision of the replica template, and the rollout to it
        reason = ", ".join(f"{k}={v}" for k, v in shown.items() if k in TEMPLATE_FIELDS)
        revisions.revision_new(deployment=deployment, actor=actor, reason=change_reason or reason)
    return _after_spec_change(
        deployment,
        actor=actor,
        action="deployment.update",
        reason="SpecChanged",
        message=("Rolling update: " if rolling else "Updated: ") + ", ".join(f"{k}={v}" for k, v in shown.items()),
        changes=shown,
    )


@transaction.atomic
def deployment_scale(*, actor: Actor, deployment: Deployment, replicas: int, why: str = "") -> Deployment:
    """Set the replica count (within max_replicas and the tenant's quota); ``why`` ends the event's message."""
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
    deployment.replicas, deployment.desired_state = replicas, DesiredState.RUNNING
    _admit(deployment)
    Deployment.objects.filter(pk=deployment.pk).update(
        replicas=replicas, desired_state=DesiredState.RUNNING, generation=F("generation") + 1
    )
    return _after_spec_change(
        deployment,
        actor=actor,
        action="deployment.scale",
        reason="Scaled",
        message=f"Replicas {old} → {replicas}" + (f" ({why[:200]})" if why else ""),
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
    deployment.replicas, deployment.desired_state = replicas, DesiredState.RUNNING
    _admit(deployment)
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
    Deployment.objects.filter(pk=deployment.pk).update(generation=F("generation") + 1)
    revisions.revision_new(deployment=deployment, actor=actor, reason="Restart")
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


@transaction.atomic
def target_credentials_rotate(*, actor: Actor) -> int:
    """Re-encrypt every target's credentials with the newest key of ``HANGAR_ENCRYPTION_KEYS``.

    Put a new key in front of the list, run this, then drop the old key. Returns how many targets
    held credentials. A target whose credentials no configured key can read stops the rotation
    (nothing is written) with ``CredentialsUnreadable``.
    """
    rotated = 0
    for target in Target.objects.select_for_update().exclude(credentials=""):
        Target.objects.filter(pk=target.pk).update(credentials=rotate(target.credentials))
        rotated += 1
    audit_record(actor=actor, action="target.credentials_rotate", tenant_id=None, changes={"targets": rotated})
    return rotated
