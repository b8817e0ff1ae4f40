"""Reads of the catalog, scoped to the caller's tenants."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from controlplane.catalog.choices import DTYPE_BYTES, DType
from controlplane.catalog.models import Model, SourceCredential, Upload
from controlplane.core.exceptions import NotFound
from controlplane.tenancy.access import Access
from controlplane.tenancy.choices import Perm

# Activations, KV cache and the framework itself need room beyond the weights.
RUNTIME_OVERHEAD = 1.2
RUNTIME_BASE_BYTES = 512 * 1024 * 1024


def model_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[Model]:
    qs = Model.objects.filter(tenant_id__in=access.tenant_ids(Perm.MODEL_VIEW)).select_related("tenant")
    filters = filters or {}
    if filters.get("tenant"):
        qs = qs.filter(tenant__slug=filters["tenant"])
    if filters.get("name"):
        qs = qs.filter(name=filters["name"])
    if filters.get("search"):
        qs = qs.filter(name__icontains=filters["search"])
    return qs


def model_get(*, access: Access, pk: int) -> Model:
    try:
        return model_list(access=access).get(pk=pk)
    except Model.DoesNotExist:
        raise NotFound("Model not found.") from None


def source_credential_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[SourceCredential]:
    qs = SourceCredential.objects.filter(tenant_id__in=access.tenant_ids(Perm.MODEL_VIEW)).select_related("tenant")
    if (filters or {}).get("tenant"):
        qs = qs.filter(tenant__slug=(filters or {})["tenant"])
    return qs


def source_credential_get(*, access: Access, pk: int) -> SourceCredential:
    try:
        return source_credential_list(access=access).get(pk=pk)
    except SourceCredential.DoesNotExist:
        raise NotFound("Credential not found.") from None


def upload_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[Upload]:
    qs = Upload.objects.filter(tenant_id__in=access.tenant_ids(Perm.MODEL_VIEW)).select_related("tenant")
    if (filters or {}).get("tenant"):
        qs = qs.filter(tenant__slug=(filters or {})["tenant"])
    return qs


def upload_get(*, access: Access, pk: int) -> Upload:
    try:
        return upload_list(access=access).get(pk=pk)
    except Upload.DoesNotExist:
        raise NotFound("Upload not found.") from None


def model_memory_estimate(*, model: Model) -> dict[str, int]:
    """Estimated bytes needed to serve the model per dtype (weights × overhead + runtime base)."""
    estimate = {}
    for dtype in DType:
        weights = model.parameter_count * DTYPE_BYTES[dtype]
        estimate[dtype.value] = int(weights * RUNTIME_OVERHEAD) + RUNTIME_BASE_BYTES
    estimate["int8"] = int(model.parameter_count * RUNTIME_OVERHEAD) + RUNTIME_BASE_BYTES
    return estimate
