"""Bring a deployment's model to the node its replicas start on, before they start.

A ``file://`` source is checked where it lies (it must still resolve under the tenant's folders,
see ``controlplane.catalog.sources``). A remote source (``s3://``, ``hf://``) is fetched into
the node's cache (``workers.store.cache``), verified against the manifest, and the replica is
started on the cache directory. The worker fetches for local targets and for Docker daemons on
its own host (a ``unix://`` socket: the cache directory is the host's); remote Docker hosts and
Kubernetes need a fetch step on their side, which this does not do yet.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from controlplane.catalog.models import Model
from controlplane.catalog.sources import folders_text, source_allowed
from controlplane.catalog.store.connect import model_resolver
from controlplane.catalog.store.resolvers import SourceError
from controlplane.catalog.store.uris import parse_source
from controlplane.core.crypto import CredentialsUnreadable
from controlplane.deployments.choices import TargetKind
from controlplane.deployments.model_cache import model_cache_forget, model_cache_record
from controlplane.deployments.models import Deployment, Target
from workers.drivers.base import PermanentDriverError, TemporaryDriverError
from workers.store.cache import EnsureResult, ModelCache, ProgressFn

EventFn = Callable[[str, str, bool], None]  # reason, message, warning
TEMPORARY_REASONS = {"SourceUnreachable"}


def node_cache(target: Target) -> ModelCache:
    return ModelCache(
        Path(settings.HANGAR_MODEL_CACHE_DIR), target.model_cache_bytes or settings.HANGAR_MODEL_CACHE_BYTES
    )


def fetches_here(target: Target) -> bool:
    """Whether this worker's filesystem is the one the target's replicas read models from."""
    if target.kind == TargetKind.LOCAL:
        return True
    return target.kind == TargetKind.DOCKER and target.docker_url.startswith("unix://")


def model_path(deployment: Deployment, *, on_progress: ProgressFn, event: EventFn) -> str:
    """The directory the deployment's replicas load the model from on its target, made ready."""
    model = deployment.model
    uri = parse_source(model.source)
    if not uri.remote:
        # Checked again at every start: a folder swapped for a symlink since registration must
        # not hand a replica another tenant's files. The message names no path.
        if not source_allowed(deployment.tenant.slug, model.source):
            raise PermanentDriverError(
                f"Model {model.name!r}: its source no longer resolves under "
                f"{folders_text(deployment.tenant.slug)}; replicas are not started from it.",
                reason="ModelSourceRefused",
            )
        return model.source
    target = deployment.target
    if not fetches_here(target):
        raise PermanentDriverError(
            f"Model {model.name!r} comes from {uri.scheme}://; target {target.name!r} ({target.kind}) has no "
            "fetch step yet: use a local target or a Docker daemon on the worker's host.",
            reason="ModelSourceUnsupported",
        )
    result = fetch(model, target, on_progress=on_progress)
    _tell(model, target, result, event)
    return str(result.path)


def fetch(model: Model, target: Target, *, on_progress: ProgressFn) -> EnsureResult:
    cache = node_cache(target)
    try:
        result = cache.ensure(model.content_hash, model.manifest, model_resolver(model), on_progress)
    except SourceError as exc:
        error = TemporaryDriverError if exc.reason in TEMPORARY_REASONS else PermanentDriverError
        raise error(f"Fetching model {model.name!r}: {exc.message}", reason=exc.reason) from None
    except CredentialsUnreadable as exc:
        raise PermanentDriverError(str(exc), reason="CredentialsUnreadable") from None
    model_cache_record(target=target, model=model)
    model_cache_forget(target=target, content_hashes=result.evicted)
    return result


def _tell(model: Model, target: Target, result: EnsureResult, event: EventFn) -> None:
    if result.repaired:
        names = ", ".join(result.repaired[:5])
        event(
            "ModelRepaired",
            f"Model {model.name!r}: {names} in the cache of {target.name!r} did not match the manifest; fetched again",
            True,
        )
    if result.downloaded_bytes:
        event(
            "ModelDownloaded",
            f"Model {model.name!r}: fetched {len(result.fetched)} file(s) ({result.downloaded_bytes} bytes) "
            f"into the cache of {target.name!r}, verified",
            False,
        )
    if result.evicted:
        event(
            "ModelCacheEvicted",
            f"The cache of {target.name!r} evicted {len(result.evicted)} models (size limit)",
            False,
        )
