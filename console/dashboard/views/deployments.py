"""Deployments: create, detail (live), spec, scale, start/stop/restart/delete, log tail."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from console.dashboard import live
from console.dashboard.base import TenantRequest, actor_for, apply_domain_error, in_tenant, page, require, tenant_view
from console.dashboard.forms import DeleteForm, DeploymentCreateForm, DeploymentSpecForm, ScaleForm
from controlplane.catalog.selectors import model_list
from controlplane.core.exceptions import DomainError, ValidationFailed
from controlplane.deployments import revisions, rollouts, services
from controlplane.deployments.choices import ProgressStep, RolloutState
from controlplane.deployments.models import Deployment
from controlplane.deployments.selectors import deployment_get, event_list, replica_list, target_list
from controlplane.tenancy.choices import Perm
from workers.logs import replica_logs

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 200
# Steps of Deployment.progress, in order, for the detail page and its script (frontend/src/dashboard.js).
PROGRESS_STEPS = {
    "order": [step.value for step in ProgressStep.ordered()],
    "ready": ProgressStep.READY.value,
    "failed": ProgressStep.FAILED.value,
}


def _spec_initial(deployment: Deployment) -> dict[str, Any]:
    return {name: getattr(deployment, name) for name in DeploymentSpecForm.base_fields}


@tenant_view(Perm.DEPLOYMENT_VIEW)
def deployment_new(request: TenantRequest) -> HttpResponse:
    require(request, Perm.DEPLOYMENT_CHANGE)
    scope = {"tenant": request.tenant.slug}
    models = model_list(access=request.access, filters=scope)
    targets = target_list(access=request.access, filters=scope)
    form = DeploymentCreateForm(models=models, targets=targets)
    status = 200
    if request.method == "POST":
        form = DeploymentCreateForm(request.POST, models=models, targets=targets)
        if form.is_valid():
            data = form.spec() | {"name": form.cleaned_data["name"]}
            try:
                deployment = services.deployment_create(
                    actor=actor_for(request),
                    tenant=request.tenant,
                    model=form.cleaned_data["model"],
                    target=form.cleaned_data["target"],
                    data=data,
                )
            except DomainError as exc:
                apply_domain_error(form, exc)
            else:
                messages.success(request, f"Deploying {deployment.name}.")
                return redirect("dashboard:deployment-detail", pk=deployment.pk)
        status = 400
    return page(request, "dashboard/deployment_new.html", {"form": form, "nav": "overview"}, status=status)


def _detail(
    request: TenantRequest,
    deployment: Deployment,
    *,
    spec_form: DeploymentSpecForm | None = None,
    scale_form: ScaleForm | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {
        "deployment": deployment,
        "spec_form": spec_form or DeploymentSpecForm(initial=_spec_initial(deployment)),
        "scale_form": scale_form or ScaleForm(initial={"replicas": deployment.replicas}),
        "replicas": replica_list(access=request.access, filters={"deployment": deployment.pk}),
        "events": event_list(access=request.access, filters={"deployment": deployment.pk})[:100],
        "chart_data": live.chart_series(access=request.access, deployment_id=deployment.pk),
        "summary": live.summary(access=request.access, deployment_id=deployment.pk),
        "steps": [(step.value, step.label) for step in ProgressStep.ordered()],
        "progress_steps": PROGRESS_STEPS,
        "nav": "overview",
    }
    return page(request, "dashboard/deployment_detail.html", context, status=status)


def _get(request: TenantRequest, pk: int) -> Deployment:
    return in_tenant(request, deployment_get(access=request.access, pk=pk))


@tenant_view(Perm.DEPLOYMENT_VIEW)
def deployment_detail(request: TenantRequest, pk: int) -> HttpResponse:
    return _detail(request, _get(request, pk))


@tenant_view(Perm.DEPLOYMENT_VIEW)
@require_POST
def deployment_spec(request: TenantRequest, pk: int) -> HttpResponse:
    require(request, Perm.DEPLOYMENT_CHANGE)
    deployment = _get(request, pk)
    form = DeploymentSpecForm(request.POST)
    if form.is_valid():
        try:
            services.deployment_update(actor=actor_for(request), deployment=deployment, data=form.spec())
        except DomainError as exc:
            apply_domain_error(form, exc)
        else:
            messages.success(request, "Spec saved; the reconciler is applying it.")
            return redirect("dashboard:deployment-detail", pk=pk)
    return _detail(request, deployment, spec_form=form, status=400)


@tenant_view(Perm.DEPLOYMENT_VIEW)
@require_POST
def deployment_scale(request: TenantRequest, pk: int) -> HttpResponse:
    require(request, Perm.DEPLOYMENT_CHANGE)
    deployment = _get(request, pk)
    form = ScaleForm(request.POST)
    if form.is_valid():
        try:
            services.deployment_scale(
                actor=actor_for(request), deployment=deployment, replicas=form.cleaned_data["replicas"]
            )
        except DomainError as exc:
            apply_domain_error(form, exc)
        else:
            messages.success(request, f"Scaling to {form.cleaned_data['replicas']} replica(s).")
            return redirect("dashboard:deployment-detail", pk=pk)
    return _detail(request, deployment, scale_form=form, status=400)


ACTIONS: dict[str, tuple[Callable[..., Deployment], str]] = {
    "start": (services.deployment_start, "Starting."),
    "stop": (services.deployment_stop, "Stopping."),
    "restart": (services.deployment_restart, "Restarting every replica."),
}


@tenant_view(Perm.DEPLOYMENT_VIEW)
@require_POST
def deployment_action(request: TenantRequest, pk: int, action: str) -> HttpResponse:
    require(request, Perm.DEPLOYMENT_CHANGE)
    deployment = _get(request, pk)
    service, done = ACTIONS[action]
    try:
        service(actor=actor_for(request), deployment=deployment)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, done)
    return redirect("dashboard:deployment-detail", pk=pk)


@tenant_view(Perm.DEPLOYMENT_VIEW)
def deployment_delete(request: TenantRequest, pk: int) -> HttpResponse:
    """A confirmation page (type the name), then the delete request."""
    require(request, Perm.DEPLOYMENT_CHANGE)
    deployment = _get(request, pk)
    form = DeleteForm(expected=deployment.name)
    status = 200
    if request.method == "POST":
        form = DeleteForm(request.POST, expected=deployment.name)
        if form.is_valid():
            try:
                services.deployment_delete(actor=actor_for(request), deployment=deployment)
            except DomainError as exc:
                apply_domain_error(form, exc)
            else:
                messages.success(request, f"Deleting {deployment.name}.")
                return redirect("dashboard:overview")
        status = 400
    return page(
        request, "dashboard/deployment_delete.html", {"deployment": deployment, "form": form, "nav": "overview"}, status
    )


@tenant_view(Perm.DEPLOYMENT_VIEW)
def deployment_logs(request: TenantRequest, pk: int) -> HttpResponse:
    """The log tail partial, polled by htmx every few seconds."""
    deployment = _get(request, pk)
    tails = []
    for replica in replica_list(access=request.access, filters={"deployment": deployment.pk}):
        try:
            text = replica_logs(access=request.access, replica_id=replica.pk, tail=LOG_TAIL_LINES)
        except DomainError as exc:  # backend unreachable: say so in place of the tail
            text = f"(logs unavailable: {exc.message})"
        tails.append((replica, text))
    return page(request, "dashboard/_logs.html", {"tails": tails, "deployment": deployment})


# ----------------------------------------------------------------------------- revisions and rollouts


@tenant_view(Perm.DEPLOYMENT_VIEW)
def deployment_rollout(request: TenantRequest, pk: int) -> HttpResponse:
    """The rollout panel (canary weight, analysis, steps) and the revisions, polled by htmx."""
    deployment = _get(request, pk)
    history = rollouts.rollout_list(deployment=deployment)
    latest = rollouts.rollout_view(history[0]) if history else None
    revision_rows = list(revisions.revision_list(deployment=deployment)[:20])
    current = next((r for r in revision_rows if r.number == deployment.template_generation), None)
    rows = [
        {
            "revision": r,
            "current": r.number == deployment.template_generation,
            "differs": sorted(k for k in r.spec if current is not None and current.spec.get(k) != r.spec.get(k)),
        }
        for r in revision_rows
    ]
    context = {
        "deployment": deployment,
        "rollout": latest,
        "active": latest is not None and latest["state"] in RolloutState.splitting(),
        "rolled_back": latest is not None and latest["state"] == RolloutState.ROLLED_BACK,
        "revisions": rows,
    }
    return page(request, "dashboard/_rollout.html", context)


@tenant_view(Perm.DEPLOYMENT_VIEW)
@require_POST
def deployment_rollback(request: TenantRequest, pk: int) -> HttpResponse:
    require(request, Perm.DEPLOYMENT_CHANGE)
    deployment = _get(request, pk)
    raw = request.POST.get("revision", "")
    try:
        if not raw.isdigit() or len(raw) > 18:
            raise ValidationFailed("Choose a revision.")
        revisions.deployment_rollback(actor=actor_for(request), deployment=deployment, number=int(raw))
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Rolling back to revision {raw}.")
    return redirect("dashboard:deployment-detail", pk=pk)


@tenant_view(Perm.DEPLOYMENT_VIEW)
@require_POST
def deployment_canary(request: TenantRequest, pk: int, action: str) -> HttpResponse:
    """Promote or abort the canary in progress by hand."""
    require(request, Perm.DEPLOYMENT_CHANGE)
    deployment = _get(request, pk)
    rollout = rollouts.rollout_active(deployment.pk)
    try:
        if rollout is None:
            raise ValidationFailed("No canary in progress.")
        if action == "promote":
            rollouts.rollout_promote(actor=actor_for(request), rollout=rollout)
        else:
            rollouts.rollout_abort(actor=actor_for(request), rollout=rollout, reason="Aborted from the dashboard")
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Canary promoted." if action == "promote" else "Canary aborted; stable serves.")
    return redirect("dashboard:deployment-detail", pk=pk)
