"""Registering, updating and removing catalog models."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from controlplane.audit.services import audit_record
from controlplane.catalog.choices import DType, ModelFormat, ModelTask, Pooling
from controlplane.catalog.inspect import inspect_model_dir
from controlplane.catalog.models import Model
from controlplane.catalog.sources import outside_message, resolve_source
from controlplane.core.context import Actor
from controlplane.core.exceptions import Conflict, PermissionDenied, ValidationFailed
from controlplane.tenancy.access import Access
from controlplane.tenancy.models import Tenant

EDITABLE = {"description", "dtype_options", "allow_unsafe_weights", "trust_remote_code"}
# Loading pickle weights or remote code runs code on the worker hosts, which belong to the
# platform: a platform admin's decision, never a tenant role's. The API and the dashboard both
# enforce it with these names.
TRUST_FIELDS = ("allow_unsafe_weights", "trust_remote_code")
TRUST_DENIED = "Only platform admins may allow unsafe weights or trust remote code."


def trust_requested(data: dict[str, Any]) -> list[str]:
    """The trust flags that ``data`` turns on; each needs a platform admin."""
    return [name for name in TRUST_FIELDS if data.get(name)]


def trust_allowed(access: Access) -> bool:
    return access.is_platform_admin


def require_trust(access: Access, data: dict[str, Any]) -> None:
    """403 when ``data`` turns on a trust flag and the caller is not a platform admin."""
    if trust_requested(data) and not trust_allowed(access):
        raise PermissionDenied(TRUST_DENIED)


def _validate_dtypes(values: Any) -> list[str]:
    if not isinstance(values, list) or any(v not in DType.values for v in values):
        raise ValidationFailed(
            "Bad dtype options.", field_errors={"dtype_options": [f"Use values from {DType.values}."]}
        )
    return list(dict.fromkeys(values))


def _task_and_pooling(task: str, pooling: str) -> tuple[str, str]:
    """An embedding model pools (mean unless said otherwise); a generative one does not."""
    if task not in ModelTask.values:
        raise ValidationFailed("Bad task.", field_errors={"task": [f"Use one of {ModelTask.values}."]})
    if task == ModelTask.GENERATE:
        if pooling:
            raise ValidationFailed("Bad pooling.", field_errors={"pooling": ["Only embedding models pool."]})
        return task, ""
    if pooling not in Pooling.values:
        raise ValidationFailed("Bad pooling.", field_errors={"pooling": [f"Use one of {Pooling.values[1:]}."]})
    return task, pooling or Pooling.MEAN


@transaction.atomic
def model_register(
    *,
    actor: Actor,
    tenant: Tenant,
    name: str,
    source: str,
    description: str = "",
    dtype_options: list[str] | None = None,
    allow_unsafe_weights: bool = False,
    trust_remote_code: bool = False,
    task: str = "",
    pooling: str = "",
) -> Model:
    """Register a model directory; its metadata is read from config and safetensors headers.

    ``task`` and ``pooling`` default to what the directory declares (see ``inspect``); given,
    they override it (an embedding model without a sentence-transformers pooling config).

    ``source`` must resolve under ``<root>/<tenant-slug>/`` or the shared folder of a model root
    (see ``controlplane.catalog.sources``); the resolved real path is what is stored.
    """
    if Model.objects.filter(tenant=tenant, name=name).exists():
        raise ValidationFailed("Name taken.", field_errors={"name": [f"A model named {name!r} exists."]})
    path = resolve_source(tenant.slug, source)
    # Inside the tenant's own folders, saying what is missing reveals nothing of anyone else's.
    if not path.is_dir():
        raise ValidationFailed(
            "Model directory not found.",
            field_errors={"source": [f"{source} is not a directory readable by the control plane."]},
        )
    info = inspect_model_dir(path)
    # A folder swapped for a symlink while we read it must not lend us another tenant's metadata.
    if resolve_source(tenant.slug, str(path)) != path:
        raise ValidationFailed("Outside your model folders.", field_errors={"source": [outside_message(tenant.slug)]})
    if info.format == "":
        raise ValidationFailed("No weights.", field_errors={"source": info.problems or ["No weight files found."]})
    if info.format == ModelFormat.PYTORCH and not allow_unsafe_weights:
        raise ValidationFailed(
            "Unsafe weights.",
            field_errors={
                "source": [
                    "This model has only pickle weights (.bin/.pt), which can run code when loaded. "
                    "Convert it to safetensors, or ask a platform admin to set allow_unsafe_weights."
                ]
            },
        )
    task, pooling = _task_and_pooling(task or info.task, pooling or info.pooling)
    model = Model.objects.create(
        tenant=tenant,
        name=name,
        description=description,
        source=str(path),
        format=info.format,
        architecture=info.architecture,
        parameter_count=info.parameter_count,
        size_bytes=info.size_bytes,
        context_length=info.context_length,
        tokenizer_info=info.tokenizer_info,
        dtype_options=_validate_dtypes(dtype_options if dtype_options is not None else list(DType.values)),
        allow_unsafe_weights=allow_unsafe_weights,
        trust_remote_code=trust_remote_code,
        task=task,
        pooling=pooling,
        random_weights=info.random_weights,
    )
    audit_record(actor=actor, action="model.register", obj=model, changes={"source": str(path)})
    return model


@transaction.atomic
def model_update(*, actor: Actor, model: Model, data: dict[str, Any]) -> Model:
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in EDITABLE:
            continue
        if key == "dtype_options":
            value = _validate_dtypes(value)
        if getattr(model, key) != value:
            changes[key] = value
            setattr(model, key, value)
    if changes:
        model.save(update_fields=[*changes, "updated_at"])
        audit_record(actor=actor, action="model.update", obj=model, changes=changes)
    return model


@transaction.atomic
def model_delete(*, actor: Actor, model: Model) -> None:
    if model.deployments.exists():
        raise Conflict("This model is used by deployments; delete them first.")
    audit_record(actor=actor, action="model.delete", obj=model)
    model.delete()
