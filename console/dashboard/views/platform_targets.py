"""Platform section, targets: list with health, add and edit (credential uploads are write-only:
never shown back, only whether one is stored), health check, delete, grants to tenants."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from console.dashboard.base import PlatformRequest, actor_for, apply_domain_error, platform_page, platform_view
from console.dashboard.forms import CREDENTIAL_FORM_FIELDS, TARGET_JSON_FIELDS, PlatformTargetForm, TargetGrantForm
from console.dashboard.views.catalog import gpu_memory_bytes
from controlplane.core.exceptions import DomainError, NotFound
from controlplane.deployments import services
from controlplane.deployments.models import Target
from controlplane.deployments.selectors import (
    platform_grant_get,
    platform_grant_list,
    platform_target_get,
    platform_target_list,
    target_credential_names,
)
from controlplane.tenancy.selectors import platform_tenant_list

SETTINGS = (
    "name",
    "kind",
    "docker_url",
    "publish_host",
    "kube_auth",
    "kube_context",
    "kube_namespace",
    *TARGET_JSON_FIELDS,
)


def _targets_page(request: PlatformRequest, form: PlatformTargetForm, status: int = 200) -> HttpResponse:
    targets = platform_target_list(access=request.access).prefetch_related("grants__tenant")
    context = {"targets": targets, "form": form, "section": "targets"}
    return platform_page(request, "dashboard/platform/targets.html", context, status=status)


@platform_view
def target_index(request: PlatformRequest) -> HttpResponse:
    if request.method != "POST":
        return _targets_page(request, PlatformTargetForm())
    form = PlatformTargetForm(request.POST)
    if form.is_valid():
        try:
            target = services.target_create(actor=actor_for(request), data=form.service_data())
        except DomainError as exc:
            apply_domain_error(form, exc)
        else:
            messages.success(request, f"Added target {target.name}; checking its health.")
            return redirect("dashboard:platform-target", pk=target.pk)
    return _targets_page(request, form, status=400)


def _edit_form(target: Target, data: Any = None) -> PlatformTargetForm:
    initial = {name: getattr(target, name) for name in SETTINGS}
    return PlatformTargetForm(data, initial=initial, stored=target_credential_names(target), editing=True)


def _target_page(
    request: PlatformRequest,
    target: Target,
    *,
    form: PlatformTargetForm | None = None,
    grant_form: TargetGrantForm | None = None,
    grant_errors: dict[int, str] | None = None,
    status: int = 200,
) -> HttpResponse:
    granted = platform_grant_list(access=request.access, filters={"target": target.pk}).order_by("tenant__slug")
    ungranted = platform_tenant_list(access=request.access).exclude(pk__in=granted.values("tenant_id"))
    gpus = [{"entry": g, "memory": gpu_memory_bytes(g)} for g in target.gpu_inventory or [] if isinstance(g, dict)]
    context = {
        "target": target,
        "form": form or _edit_form(target),
        "stored": sorted(target_credential_names(target)),
        "credential_fields": CREDENTIAL_FORM_FIELDS,
        "grants": granted,
        "grant_form": grant_form or TargetGrantForm(tenants=ungranted.order_by("slug")),
        "grant_errors": grant_errors or {},
        "gpus": gpus,
        "section": "targets",
    }
    return platform_page(request, "dashboard/platform/target_detail.html", context, status=status)


@platform_view
def target_detail(request: PlatformRequest, pk: int) -> HttpResponse:
    target = platform_target_get(access=request.access, pk=pk)
    if request.method != "POST":
        return _target_page(request, target)
    form = _edit_form(target, request.POST)
    if form.is_valid():
        try:
            target = services.target_update(actor=actor_for(request), target=target, data=form.service_data())
        except DomainError as exc:
            apply_domain_error(form, exc)
        else:
            messages.success(request, f"Saved target {target.name}.")
            return redirect("dashboard:platform-target", pk=pk)
    return _target_page(request, target, form=form, status=400)


@platform_view
@require_POST
def target_check(request: PlatformRequest, pk: int) -> HttpResponse:
    target = platform_target_get(access=request.access, pk=pk)
    services.target_check(actor=actor_for(request), target=target)
    messages.success(request, "Health check requested.")
    return redirect("dashboard:platform-target", pk=pk)


@platform_view
@require_POST
def target_delete(request: PlatformRequest, pk: int) -> HttpResponse:
    target = platform_target_get(access=request.access, pk=pk)
    try:
        services.target_delete(actor=actor_for(request), target=target)
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("dashboard:platform-target", pk=pk)
    messages.success(request, f"Removed target {target.name}.")
    return redirect("dashboard:platform-targets")


@platform_view
@require_POST
def target_grant(request: PlatformRequest, pk: int) -> HttpResponse:
    target = platform_target_get(access=request.access, pk=pk)
    form = TargetGrantForm(request.POST, tenants=platform_tenant_list(access=request.access))
    if form.is_valid():
        tenant = form.cleaned_data["tenant"]
        try:
            services.target_grant(
                actor=actor_for(request), target=target, tenant=tenant, namespace=form.cleaned_data["namespace"]
            )
        except DomainError as exc:
            apply_domain_error(form, exc)
        else:
            messages.success(request, f"Granted {target.name} to {tenant.slug}.")
            return redirect("dashboard:platform-target", pk=pk)
    return _target_page(request, target, grant_form=form, status=400)


@platform_view
@require_POST
def target_revoke(request: PlatformRequest, pk: int, grant_pk: int) -> HttpResponse:
    target = platform_target_get(access=request.access, pk=pk)
    grant = platform_grant_get(access=request.access, pk=grant_pk)
    if grant.target_id != target.pk:
        raise NotFound("Grant not found.")
    try:
        services.target_revoke(actor=actor_for(request), grant=grant)
    except DomainError as exc:
        return _target_page(request, target, grant_errors={grant.pk: exc.message}, status=exc.status)
    messages.success(request, f"Revoked {target.name} from {grant.tenant.slug}.")
    return redirect("dashboard:platform-target", pk=pk)
