"""Where a tenant's model sources may live: ``<root>/<tenant-slug>/`` or ``<root>/_shared/``.

Each model root (``HANGAR_MODEL_ROOTS``) holds one folder per tenant and a shared folder that
platform admins publish from (``HANGAR_MODEL_SHARED_FOLDER``); the platform's store
(``HANGAR_MODEL_STORE_DIR``) holds one folder per tenant of the models it uploaded. A source is judged by its real
path (symlinks followed), at registration and again whenever replicas are started, so a symlink
swapped after registration cannot reach another tenant's files. A path outside the tenant's
folders is refused with one message whether or not it exists: registration must not become a
way to probe the control plane's filesystem.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

from controlplane.core.exceptions import ValidationFailed


def root_folders(tenant_slug: str) -> list[Path]:
    """The model roots' folders of a tenant, as given (one pair per root, tenant's first)."""
    roots = [Path(root) for root in settings.HANGAR_MODEL_ROOTS]
    return [root / folder for root in roots for folder in (tenant_slug, settings.HANGAR_MODEL_SHARED_FOLDER)]


def allowed_folders(tenant_slug: str) -> list[Path]:
    """The folders a tenant's sources may lie under: its model roots' folders, then its
    verified uploads in the platform's store (``controlplane.catalog.uploads``)."""
    return [*root_folders(tenant_slug), Path(settings.HANGAR_MODEL_STORE_DIR) / tenant_slug]


def folders_text(tenant_slug: str) -> str:
    """``<root>/<slug>/ or <root>/_shared/`` for every root, to tell a tenant where sources go.

    The platform's store is not named: uploads reach it through the API, never by a path the
    tenant types, and its location on the control plane's disk is none of a tenant's business.
    """
    return " or ".join(f"{folder}/" for folder in root_folders(tenant_slug))


def outside_message(tenant_slug: str) -> str:
    """The one refusal for every path outside the tenant's folders, existing or not."""
    return f"Model sources must be directories under {folders_text(tenant_slug)}."


def source_allowed(tenant_slug: str, path: str | os.PathLike[str]) -> bool:
    """Whether ``path``, resolved now (symlinks followed), lies under one of the tenant's folders.

    The folders are resolved too, so a platform admin may make ``<root>/<slug>`` a symlink to
    another disk. Called again when replicas start: a registered path can change underneath.
    """
    if not tenant_slug or tenant_slug.startswith("_") or not Path(path).is_absolute():
        return False
    real = Path(os.path.realpath(path))
    return any(real.is_relative_to(os.path.realpath(folder)) for folder in allowed_folders(tenant_slug))


def resolve_source(tenant_slug: str, source: str) -> Path:
    """The real path of ``source`` if the tenant may register it, else a ``ValidationFailed``.

    Only the path's shape is judged before the containment check, so nothing said here depends
    on what exists outside the tenant's folders; "not found" is the caller's, for paths inside.
    """
    if not source.startswith("/"):
        raise ValidationFailed("Relative path.", field_errors={"source": ["Give an absolute directory path."]})
    if any(part in {".", ".."} for part in source.split("/")) or "\0" in source:
        raise ValidationFailed(
            "Path with '.' or '..'.", field_errors={"source": ["Give the path without '.' or '..' parts."]}
        )
    if not source_allowed(tenant_slug, source):
        raise ValidationFailed("Outside your model folders.", field_errors={"source": [outside_message(tenant_slug)]})
    return Path(os.path.realpath(source))


def in_platform_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (resolved) is an upload in the platform's store, on the control plane's disk:
    only replicas that read the worker's filesystem can use it."""
    real = Path(os.path.realpath(path))
    return real.is_relative_to(os.path.realpath(settings.HANGAR_MODEL_STORE_DIR))
