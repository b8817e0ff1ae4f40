"""Registering, updating and removing catalog models, and the tenants' source credentials."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from controlplane.audit.services import audit_record
from controlplane.catalog.choices import CredentialKind, DType, ModelFormat, ModelTask, Pooling
from controlplane.catalog.models import Model, SourceCredential
from controlplane.catalog.sources import outside_message, resolve_source
from controlplane.catalog.store.connect import (
    KIND_OF_SCHEME,
    SECRET_FIELDS,
    endpoint_allowed,
    normalize_endpoint,
    remote_resolver,
)
from controlplane.catalog.store.metadata import ModelInfo, inspect_source
from controlplane.catalog.store.uris import parse_source
from controlplane.core.context import Actor
from controlplane.core.crypto import encrypt_json
from controlplane.core.exceptions import Conflict, PermissionDenied, ValidationFailed
from controlplane.tenancy.access import Access
from controlplane.tenancy.models import Tenant
from workers.runtime.store.resolvers import FileResolver, HfResolver, SourceError
from workers.runtime.store.uris import SourceURI

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


def _source_error(exc: SourceError) -> ValidationFailed:
    return ValidationFailed(exc.message, field_errors={"source": [exc.message]})


def _credential_for(tenant: Tenant, name: str, uri: SourceURI) -> SourceCredential | None:
    if not name:
        return None
    if not uri.remote:
        raise ValidationFailed("No credential for files.", field_errors={"credential": ["file sources take none."]})
    credential = SourceCredential.objects.filter(tenant=tenant, name=name).first()
    if credential is None or credential.kind != KIND_OF_SCHEME[uri.scheme]:
        raise ValidationFailed(
            "Unknown credential.",
            field_errors={"credential": [f"No {KIND_OF_SCHEME[uri.scheme]} credential named {name!r} in this tenant."]},
        )
    return credential


def _inspect_file(tenant: Tenant, source: str, uri: SourceURI) -> tuple[str, ModelInfo]:
    path = resolve_source(tenant.slug, uri.path)
    # Inside the tenant's own folders, saying what is missing reveals nothing of anyone else's.
    if not path.is_dir():
        raise ValidationFailed(
            "Model directory not found.",
            field_errors={"source": [f"{source} is not a directory readable by the control plane."]},
        )
    try:
        info = inspect_source(FileResolver(path), max_bytes=settings.HANGAR_MODEL_MAX_BYTES)
    except SourceError as exc:
        raise _source_error(exc) from None
    # A folder swapped for a symlink while we read it must not lend us another tenant's metadata.
    if resolve_source(tenant.slug, str(path)) != Path(path):
        raise ValidationFailed("Outside your model folders.", field_errors={"source": [outside_message(tenant.slug)]})
    return str(path), info


def _inspect_remote(uri: SourceURI, credential: SourceCredential | None) -> tuple[str, ModelInfo]:
    try:
        resolver = remote_resolver(uri, credential)
        info = inspect_source(resolver, max_bytes=settings.HANGAR_MODEL_MAX_BYTES)
    except SourceError as exc:
        raise _source_error(exc) from None
    if isinstance(resolver, HfResolver):
        return str(uri.pinned(resolver.commit)), info
    return str(uri), info


def _check_weights(info: ModelInfo, allow_unsafe_weights: bool) -> None:
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


def model_register(
    *,
    actor: Actor,
    tenant: Tenant,
    name: str,
    source: str,
    credential: str = "",
    description: str = "",
    dtype_options: list[str] | None = None,
    allow_unsafe_weights: bool = False,
    trust_remote_code: bool = False,
    task: str = "",
    pooling: str = "",
) -> Model:
    """Register a model from a source URI; metadata and the manifest are read from the source.

    ``file://`` (or a plain absolute path) must resolve under the tenant's folders of a model
    root (see ``controlplane.catalog.sources``) and its real path is stored; ``s3://`` and
    ``hf://`` are read with the tenant's ``credential`` (by name), and a hub revision is stored
    pinned to its commit hash. Only config, tokenizer files and safetensors headers are read for
    metadata; files whose sha256 the source does not state are streamed through the hash.
    The source is read outside any transaction: it may take a while. ``task`` and ``pooling``
    default to what the source declares (a sentence-transformers pooling config means embed).
    """
    if Model.objects.filter(tenant=tenant, name=name).exists():
        raise ValidationFailed("Name taken.", field_errors={"name": [f"A model named {name!r} exists."]})
    uri = parse_source(source)
    cred = _credential_for(tenant, credential, uri)
    stored, info = _inspect_remote(uri, cred) if uri.remote else _inspect_file(tenant, source, uri)
    _check_weights(info, allow_unsafe_weights)
    task, pooling = _task_and_pooling(task or info.task, pooling or info.pooling)
    with transaction.atomic():
        if Model.objects.filter(tenant=tenant, name=name).exists():
            raise ValidationFailed("Name taken.", field_errors={"name": [f"A model named {name!r} exists."]})
        model = Model.objects.create(
            tenant=tenant,
            name=name,
            description=description,
            source=stored,
            credential=cred,
            format=info.format,
            architecture=info.architecture,
            parameter_count=info.parameter_count,
            size_bytes=info.size_bytes,
            context_length=info.context_length,
            tokenizer_info=info.tokenizer_info,
            manifest=info.manifest,
            content_hash=info.content_hash,
            dtype_options=_validate_dtypes(dtype_options if dtype_options is not None else list(DType.values)),
            allow_unsafe_weights=allow_unsafe_weights,
            trust_remote_code=trust_remote_code,
            task=task,
            pooling=pooling,
            random_weights=info.random_weights,
        )
        audit_record(
            actor=actor,
            action="model.register",
            obj=model,
            changes={"source": stored, "content_hash": info.content_hash, "files": len(info.manifest)},
        )
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
    # A model uploaded to the platform's store takes its files with it (controlplane.catalog.uploads).
    stored = [
        Path(settings.HANGAR_MODEL_STORE_DIR) / model.tenant.slug / str(pk)
        for pk in model.uploads.values_list("pk", flat=True)
    ]
    model.uploads.all().delete()
    model.delete()

    def remove_files() -> None:
        for path in stored:
            shutil.rmtree(path, ignore_errors=True)

    transaction.on_commit(remove_files)


# ----------------------------------------------------------------------------- credentials


@transaction.atomic
def source_credential_create(
    *,
    actor: Actor,
    tenant: Tenant,
    name: str,
    kind: str,
    endpoint_url: str = "",
    region: str = "",
    secret: dict[str, str],
) -> SourceCredential:
    """Store a tenant's S3 or hub credential; the secret is encrypted and never shown again."""
    if SourceCredential.objects.filter(tenant=tenant, name=name).exists():
        raise ValidationFailed("Name taken.", field_errors={"name": [f"A credential named {name!r} exists."]})
    if not endpoint_allowed(endpoint_url):
        raise ValidationFailed(
            "Endpoint not allowed.",
            field_errors={"endpoint_url": ["Use an endpoint the platform allows (ask a platform admin)."]},
        )
    unknown = set(secret) - set(SECRET_FIELDS[CredentialKind(kind)])
    if unknown:
        raise ValidationFailed(
            "Bad secret.",
            field_errors={"secret": [f"A {kind} secret holds only {SECRET_FIELDS[CredentialKind(kind)]}."]},
        )
    credential = SourceCredential.objects.create(
        tenant=tenant,
        name=name,
        kind=kind,
        endpoint_url=normalize_endpoint(endpoint_url),
        region=region,
        secret=encrypt_json(secret),
    )
    audit_record(
        actor=actor,
        action="source_credential.create",
        obj=credential,
        changes={
            "kind": kind,
            "endpoint_url": credential.endpoint_url,
            "secret_fields": sorted(k for k, v in secret.items() if v),
        },
    )
    return credential


@transaction.atomic
def source_credential_delete(*, actor: Actor, credential: SourceCredential) -> None:
    if credential.models.exists():
        raise Conflict("Models are registered with this credential; delete them first.")
    audit_record(actor=actor, action="source_credential.delete", obj=credential)
    credential.delete()
