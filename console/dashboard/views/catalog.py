"""Models (catalog) and the targets granted to the tenant: list, register, detail."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from console.dashboard.base import TenantRequest, actor_for, apply_domain_error, in_tenant, page, require, tenant_view
from console.dashboard.forms import ModelRegisterForm
from controlplane.catalog import services as catalog_services
from controlplane.catalog import uploads
from controlplane.catalog.choices import UploadStatus
from controlplane.catalog.selectors import model_get, model_list, model_memory_estimate, upload_list
from controlplane.core.exceptions import DomainError, NotFound
from controlplane.deployments.model_cache import model_cached_on
from controlplane.deployments.selectors import grant_for, target_get, target_list
from controlplane.tenancy.choices import Perm

MIB = 1024 * 1024


def gpu_memory_bytes(gpu: dict[str, Any]) -> int:
    """Memory of one GPU inventory entry, whichever unit the target reported it in."""
    for key, factor in (("memory_bytes", 1), ("memory_mb", MIB), ("memory_mib", MIB), ("memory_gb", 1024 * MIB)):
        value = gpu.get(key)
        if isinstance(value, int | float) and value > 0:
            return int(value * factor)
    return 0


def fit_on_target(needed: int, gpus: list[dict[str, Any]]) -> str:
    """How a model of ``needed`` bytes fits a target's GPUs. A replica uses at most one GPU (the
    runtime has no multi-GPU sharding yet), so only the largest GPU counts."""
    sizes = [s for s in (gpu_memory_bytes(g) for g in gpus if isinstance(g, dict)) if s > 0]
    if not sizes:
        return "no GPUs (CPU only)"
    return "fits on 1 GPU" if max(sizes) >= needed else "does not fit on one GPU"


@tenant_view(Perm.MODEL_VIEW)
def model_index(request: TenantRequest) -> HttpResponse:
    form = ModelRegisterForm()
    status = 200
    if request.method == "POST":
        require(request, Perm.MODEL_CHANGE)
        form = ModelRegisterForm(request.POST)
        if form.is_valid() and not catalog_services.trust_allowed(request.access):
            for flag in catalog_services.trust_requested(form.cleaned_data):
                form.add_error(flag, catalog_services.TRUST_DENIED)
        if form.is_valid():
            try:
                model = catalog_services.model_register(
                    actor=actor_for(request), tenant=request.tenant, **form.cleaned_data
                )
            except DomainError as exc:
                apply_domain_error(form, exc)
            else:
                messages.success(request, f"Registered {model.name}.")
                return redirect("dashboard:model-detail", pk=model.pk)
        status = 400
    models = model_list(access=request.access, filters={"tenant": request.tenant.slug})
    return page(request, "dashboard/models.html", {"models": models, "form": form, "nav": "models"}, status=status)


@tenant_view(Perm.MODEL_CHANGE)
def model_upload(request: TenantRequest) -> HttpResponse:
    """Upload a model's files from the browser into the platform's store.

    The page's script (``hangar/upload.js``) drives the REST upload API with the session: it
    hashes each file, opens the upload, sends the chunks (resuming from the offsets the server
    holds after a broken chunk), then completes it. Open uploads are listed to resume or abort.
    """
    open_uploads = [
        {"upload": u, "received": sum(uploads.received(u).values())}
        for u in upload_list(access=request.access, filters={"tenant": request.tenant.slug}).filter(
            status=UploadStatus.OPEN
        )
    ]
    limits = {
        "chunk_bytes": settings.HANGAR_UPLOAD_CHUNK_BYTES,
        "max_file_bytes": settings.HANGAR_UPLOAD_MAX_FILE_BYTES,
        "max_files": uploads.MAX_FILES,
        "suffixes": list(uploads.ALLOWED_SUFFIXES),
    }
    context = {
        "open_uploads": open_uploads,
        "limits": limits,
        "store_used": uploads.tenant_store_bytes(request.tenant),
        "store_limit": settings.HANGAR_UPLOAD_TENANT_BYTES,
        "nav": "models",
    }
    return page(request, "dashboard/model_upload.html", context)


@tenant_view(Perm.MODEL_VIEW)
def model_detail(request: TenantRequest, pk: int) -> HttpResponse:
    model = in_tenant(request, model_get(access=request.access, pk=pk))
    estimate = model_memory_estimate(model=model)
    targets = list(target_list(access=request.access, filters={"tenant": request.tenant.slug}))
    rows = [
        {"dtype": dtype, "bytes": needed, "fits": [(t, fit_on_target(needed, t.gpu_inventory or [])) for t in targets]}
        for dtype, needed in estimate.items()
    ]
    granted = {t.pk for t in targets}
    # Only targets granted to the tenant are named (a grant withdrawn since leaves no trace here).
    cached_on = [e for e in model_cached_on(model=model) if e.target_id in granted]
    return page(
        request,
        "dashboard/model_detail.html",
        {"model": model, "rows": rows, "targets": targets, "cached_on": cached_on, "nav": "models"},
    )


@tenant_view(Perm.MODEL_VIEW)
@require_POST
def model_delete(request: TenantRequest, pk: int) -> HttpResponse:
    require(request, Perm.MODEL_CHANGE)
    model = in_tenant(request, model_get(access=request.access, pk=pk))
    try:
        catalog_services.model_delete(actor=actor_for(request), model=model)
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("dashboard:model-detail", pk=pk)
    messages.success(request, f"Removed {model.name}.")
    return redirect("dashboard:models")


@tenant_view(Perm.TARGET_VIEW)
def target_index(request: TenantRequest) -> HttpResponse:
    """The targets granted to the current tenant: name, kind, health and capacity. Platform admins
    add and configure targets in the Platform section; tenants never see connection settings."""
    targets = target_list(access=request.access, filters={"tenant": request.tenant.slug})
    rows = [(t, sum(gpu_memory_bytes(g) for g in t.gpu_inventory or [] if isinstance(g, dict))) for t in targets]
    return page(request, "dashboard/targets.html", {"rows": rows, "nav": "targets"})


@tenant_view(Perm.TARGET_VIEW)
def target_detail(request: TenantRequest, pk: int) -> HttpResponse:
    target = target_get(access=request.access, pk=pk)
    if grant_for(target_id=target.pk, tenant_id=request.tenant.pk) is None:
        raise NotFound("Target not found.")  # granted to another of the user's tenants, not this one
    gpus = [{"entry": g, "memory": gpu_memory_bytes(g)} for g in target.gpu_inventory or [] if isinstance(g, dict)]
    return page(request, "dashboard/target_detail.html", {"target": target, "gpus": gpus, "nav": "targets"})
