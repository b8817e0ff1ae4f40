"""Registering, updating and removing catalog models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from controlplane.audit.services import audit_record
from controlplane.catalog.choices import DType, ModelFormat
from controlplane.catalog.inspect import inspect_model_dir
from controlplane.catalog.models import Model
from controlplane.core.context import Actor
from controlplane.core.exceptions import Conflict, ValidationFailed
from controlplane.tenancy.choices import Perm
from controlplane.tenancy.models import Tenant

EDITABLE = {"description", "dtype_options", "allow_unsafe_weights", "trust_remote_code"}
# Loading pickle weights or remote code runs code on the worker hosts: an admin's decision.
# The API and the dashboard both enforce it with these two names.
TRUST_FIELDS = ("allow_unsafe_weights", "trust_remote_code")
TRUST_PERM = Perm.TENANT_CHANGE


def trust_requested(data: dict[str, Any]) -> list[str]:
    """The trust flags that ``data`` turns on; each needs ``TRUST_PERM`` in the model's tenant."""
    return [name for name in TRUST_FIELDS if data.get(name)]


def _validate_dtypes(values: Any) -> list[str]:
    if not isinstance(values, list) or any(v not in DType.values for v in values):
        raise ValidationFailed(
            "Bad dtype options.", field_errors={"dtype_options": [f"Use values from {DType.values}."]}
        )
    return list(dict.fromkeys(values))


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
) -> Model:
    """Register a model directory; its metadata is read from config and safetensors headers."""
    if Model.objects.filter(tenant=tenant, name=name).exists():
        raise ValidationFailed("Name taken.", field_errors={"name": [f"A model named {name!r} exists."]})
    path = Path(source)
    if not path.is_absolute():
        raise ValidationFailed("Relative path.", field_errors={"source": ["Give an absolute directory path."]})
    roots = [Path(root) for root in settings.HANGAR_MODEL_ROOTS]
    if roots and not any(path.resolve().is_relative_to(root) for root in roots):
        raise ValidationFailed(
            "Outside the model roots.",
            field_errors={"source": [f"Model directories must be under one of: {', '.join(map(str, roots))}."]},
        )
    if not path.is_dir():
        raise ValidationFailed(
            "Model directory not found.",
            field_errors={"source": [f"{source} is not a directory readable by the control plane."]},
        )
    info = inspect_model_dir(path)
    if info.format == "":
        raise ValidationFailed("No weights.", field_errors={"source": info.problems or ["No weight files found."]})
    if info.format == ModelFormat.PYTORCH and not allow_unsafe_weights:
        raise ValidationFailed(
            "Unsafe weights.",
            field_errors={
                "source": [
                    "This model has only pickle weights (.bin/.pt), which can run code when loaded. "
                    "Convert it to safetensors, or set allow_unsafe_weights if you trust it."
                ]
            },
        )
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
