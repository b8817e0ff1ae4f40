"""Revisions: every change to a deployment's replica template is an immutable, numbered snapshot.

A revision's ``number`` is the ``template_generation`` its replicas carry, so "which revision
does this replica run" is a label, not a guess. ``revision_new`` is the one place that moves a
deployment to a new template (create, spec change, restart, rollback, fault switch); it also
starts the rollout that replaces the replicas (``controlplane.deployments.rollouts``).
Rolling back to revision N makes a new revision whose spec equals N's exactly.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, QuerySet

from controlplane.catalog.models import Model
from controlplane.core.context import Actor
from controlplane.core.exceptions import NotFound, PermissionDenied, ValidationFailed
from controlplane.deployments import quota
from controlplane.deployments.events import event_emit
from controlplane.deployments.models import Deployment, Revision
from controlplane.deployments.spec import TEMPLATE_SPEC_FIELDS
from controlplane.tenancy.access import is_platform_admin

# Fault injection (tests only): what each key may hold.
FAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "error_rate": (0.0, 1.0),
    "delay_rate": (0.0, 1.0),
    "delay_ms": (0, 60_000),
}


def snapshot(deployment: Deployment) -> dict[str, Any]:
    """The replica template of ``deployment`` as a revision stores it (JSON values)."""
    spec: dict[str, Any] = {name: getattr(deployment, name) for name in sorted(TEMPLATE_SPEC_FIELDS)}
    spec["gpu_ids"] = list(spec.get("gpu_ids") or [])
    spec["model"] = deployment.model_id
    spec["faults"] = dict(deployment.faults or {})
    return spec


def _next_number(deployment: Deployment) -> int:
    top = Revision.objects.filter(deployment_id=deployment.pk).aggregate(top=Max("number"))["top"] or 0
    return max(top, deployment.template_generation) + 1


def revision_new(
    *, deployment: Deployment, actor: Actor, reason: str, rollback_of: int | None = None, first: bool = False
) -> Revision:
    """Record the deployment's current template as a new revision and point its replicas at it.

    Call inside the service's transaction, with the deployment row locked and its new spec saved.
    ``first``: the deployment was just created (revision = its ``template_generation``, no rollout).
    """
    from controlplane.deployments import rollouts

    previous = deployment.template_generation
    number = deployment.template_generation if first else _next_number(deployment)
    if not first:
        Deployment.objects.filter(pk=deployment.pk).update(template_generation=number)
        deployment.template_generation = number
    revision = Revision.objects.create(
        tenant_id=deployment.tenant_id,
        deployment=deployment,
        number=number,
        spec=snapshot(deployment),
        actor=actor.label[:150],
        reason=reason[:500],
        rollback_of=rollback_of,
    )
    if not first:
        rollouts.rollout_begin(
            deployment=deployment, previous=previous, revision=revision, actor=actor, rollback=rollback_of is not None
        )
    return revision


def ensure_revision(deployment: Deployment) -> None:
    """A deployment whose running template has no revision (made outside the services, e.g. by
    fixtures): record it once, before a write changes it (``services._lock`` calls this)."""
    if Revision.objects.filter(deployment_id=deployment.pk, number=deployment.template_generation).exists():
        return
    Revision.objects.create(
        tenant_id=deployment.tenant_id,
        deployment=deployment,
        number=deployment.template_generation,
        spec=snapshot(deployment),
        actor="system",
        reason="The running template, recorded before its first change",
    )


# ----------------------------------------------------------------------------- reads


def revision_list(*, deployment: Deployment) -> QuerySet[Revision]:
    """The deployment's revisions, newest first (the caller has checked access to the deployment)."""
    return Revision.objects.filter(deployment_id=deployment.pk).order_by("-number")


def revision_get(*, deployment: Deployment, number: int) -> Revision:
    revision = Revision.objects.filter(deployment_id=deployment.pk, number=number).first()
    if revision is None:
        raise NotFound(f"Deployment {deployment.name!r} has no revision {number}.")
    return revision


def revision_diff(*, deployment: Deployment, a: int, b: int) -> dict[str, dict[str, Any]]:
    """{field: {"a": value in revision a, "b": value in revision b}} for the fields that differ."""
    left, right = revision_get(deployment=deployment, number=a).spec, revision_get(deployment=deployment, number=b).spec
    return {
        k: {"a": left.get(k), "b": right.get(k)} for k in sorted(set(left) | set(right)) if left.get(k) != right.get(k)
    }


def deployment_for_platform(*, pk: int) -> Deployment:
    """Any tenant's deployment, for a platform admin's action (the caller has checked the role)."""
    deployment = Deployment.objects.filter(pk=pk).first()
    if deployment is None:
        raise NotFound("Deployment not found.")
    return deployment


# ----------------------------------------------------------------------------- writes


def _apply(deployment: Deployment, spec: dict[str, Any]) -> list[str]:
    """Set the template of ``spec`` on the (locked) deployment; returns the fields that changed."""
    changed: list[str] = []
    for name in TEMPLATE_SPEC_FIELDS:
        if name in spec and getattr(deployment, name) != spec[name]:
            setattr(deployment, name, spec[name])
            changed.append(name)
    if spec.get("model") and spec["model"] != deployment.model_id:
        model = Model.objects.filter(pk=spec["model"], tenant_id=deployment.tenant_id).first()
        if model is None:
            raise ValidationFailed("The model of that revision no longer exists; it cannot be restored.")
        deployment.model = model
        changed.append("model")
    if dict(deployment.faults or {}) != dict(spec.get("faults") or {}):
        deployment.faults = dict(spec.get("faults") or {})
        changed.append("faults")
    return changed


def restore_template(deployment: Deployment, revision: Revision) -> list[str]:
    """Put ``revision``'s template back on the locked deployment and save it (no new revision)."""
    changed = _apply(deployment, revision.spec)
    if changed:
        deployment.save(update_fields=[*changed, "updated_at"])
    return changed


@transaction.atomic
def deployment_rollback(*, actor: Actor, deployment: Deployment, number: int) -> Deployment:
    """Roll back to revision ``number`` in one action: a new revision whose spec equals it exactly."""
    from controlplane.deployments.services import _after_spec_change, _lock, _refuse_if_deleting

    deployment = _lock(deployment)
    _refuse_if_deleting(deployment)
    target = revision_get(deployment=deployment, number=number)
    changed = _apply(deployment, target.spec)
    quota.admit(deployment.tenant_id, exclude_deployment_id=deployment.pk, new_cost=quota.deployment_cost(deployment))
    deployment.save(update_fields=[*changed, "updated_at"])
    Deployment.objects.filter(pk=deployment.pk).update(generation=F("generation") + 1)
    revision = revision_new(
        deployment=deployment, actor=actor, reason=f"Rollback to revision {number}", rollback_of=number
    )
    return _after_spec_change(
        deployment,
        actor=actor,
        action="deployment.rollback",
        reason="RolledBackTo",
        message=f"Rollback to revision {number}: revision {revision.number} has its spec",
        changes={"revision": revision.number, "rollback_of": number, "fields": sorted(changed)},
    )


def _clean_faults(data: dict[str, Any]) -> dict[str, float]:
    errors: dict[str, list[str]] = {}
    clean: dict[str, float] = {}
    for key, value in data.items():
        if key not in FAULT_BOUNDS:
            errors[key] = [f"Unknown fault; use {', '.join(FAULT_BOUNDS)}."]
            continue
        low, high = FAULT_BOUNDS[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            errors[key] = [f"Must be a number from {low:g} to {high:g}."]
            continue
        if value:
            clean[key] = float(value)
    if errors:
        raise ValidationFailed("Invalid faults.", field_errors=errors)
    return clean


@transaction.atomic
def deployment_faults_set(*, actor: Actor, deployment: Deployment, faults: dict[str, Any]) -> Deployment:
    """Make a fraction of the replicas' requests fail (500) or slow down: a bad revision on purpose.

    Platform admins only (the API checks, and so does this), and only where the installation
    allows fault injection (``HANGAR_FAULT_INJECTION``): a tenant must never be able to degrade
    a replica, its neighbours' GPU time included, through a spec field. Makes a new revision.
    """
    from controlplane.deployments.services import _after_spec_change, _lock, _refuse_if_deleting

    if actor.user is None or not is_platform_admin(actor.user):
        raise PermissionDenied("Only platform administrators may inject faults.")
    if not settings.HANGAR_FAULT_INJECTION:
        raise PermissionDenied("Fault injection is off in this installation (HANGAR_FAULT_INJECTION).")
    clean = _clean_faults(faults)
    deployment = _lock(deployment)
    _refuse_if_deleting(deployment)
    if clean == dict(deployment.faults or {}):
        return deployment
    deployment.faults = clean
    deployment.save(update_fields=["faults", "updated_at"])
    Deployment.objects.filter(pk=deployment.pk).update(generation=F("generation") + 1)
    revision = revision_new(deployment=deployment, actor=actor, reason=f"Fault injection: {clean or 'none'}")
    event_emit(
        deployment=deployment,
        reason="FaultsSet",
        message=f"Revision {revision.number} injects faults: {clean or 'none'}",
        type="Warning",
        actor=actor.label,
    )
    return _after_spec_change(
        deployment,
        actor=actor,
        action="deployment.faults",
        reason="SpecChanged",
        message=f"Rolling update to revision {revision.number} (fault injection)",
        changes={"faults": clean, "revision": revision.number},
    )
