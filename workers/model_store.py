"""Bring a deployment's model to the node its replicas start on, before they start.

A ``file://`` source is checked where it lies (it must still resolve under the tenant's folders,
see ``controlplane.catalog.sources``). A remote source (``s3://``, ``hf://``) is fetched, verified
against the manifest, by whoever shares the replicas' filesystem (``fetch_site``):

* the worker itself, into its node cache (``workers.runtime.store.cache``), for local targets and
  Docker daemons on its own host (a ``unix://`` socket);
* the Docker daemon, for other Docker hosts (``tcp://``, ``ssh://``, or every daemon when
  ``HANGAR_DOCKER_MODEL_VOLUMES`` is on: a worker in a container has a cache the host cannot
  mount): a short-lived container of the runtime image fills a volume per model
  (``workers.drivers.docker_models``), and replicas mount it;
* the pod, on Kubernetes: an init container of each pod (``workers.drivers.kubernetes``).

An upload lives in the platform's store on the control plane's disk: only the first kind of
target can read it, the others refuse it with a message that says what to do instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from controlplane.catalog.models import Model
from controlplane.catalog.sources import folders_text, in_platform_store, source_allowed
from controlplane.catalog.store.connect import model_fetch_plan, model_resolver
from controlplane.catalog.store.uris import parse_source
from controlplane.core.crypto import CredentialsUnreadable
from controlplane.deployments.choices import TargetKind
from controlplane.deployments.model_cache import model_cache_forget, model_cache_last_used, model_cache_record
from controlplane.deployments.models import Deployment, Target
from workers.drivers.base import Driver, DriverError, ModelFetch, PermanentDriverError, TemporaryDriverError
from workers.runtime.store.cache import ModelCache, ProgressFn
from workers.runtime.store.resolvers import SourceError

EventFn = Callable[[str, str, bool], None]  # reason, message, warning
TEMPORARY_REASONS = {"SourceUnreachable"}


class FetchSite:
    """Who fetches a remote model for a target's replicas."""

    WORKER = "worker"  # into the worker's own cache, which the replicas read
    DAEMON = "daemon"  # a container on the Docker host, into a volume the replicas mount
    POD = "pod"  # an init container in every pod (Kubernetes)


@dataclass(frozen=True)
class ModelPlacement:
    """Where the replicas read the model: ``ReplicaSpec``'s ``model_path``, ``model_volume`` and
    ``model_fetch``."""

    path: str
    volume: str = ""
    fetch: ModelFetch | None = None


def fetch_site(target: Target) -> str:
    if target.kind == TargetKind.KUBERNETES:
        return FetchSite.POD
    if target.kind == TargetKind.DOCKER:
        on_host = target.docker_url.startswith("unix://") and not settings.HANGAR_DOCKER_MODEL_VOLUMES
        return FetchSite.WORKER if on_host else FetchSite.DAEMON
    return FetchSite.WORKER


def cache_limit(target: Target) -> int:
    return target.model_cache_bytes or settings.HANGAR_MODEL_CACHE_BYTES


def node_cache(target: Target) -> ModelCache:
    return ModelCache(Path(settings.HANGAR_MODEL_CACHE_DIR), cache_limit(target))


def model_placement(
    deployment: Deployment,
    driver: Driver | None,
    *,
    on_progress: ProgressFn,
    heartbeat: Callable[[], None],
    event: EventFn,
) -> ModelPlacement:
    """Where the deployment's replicas load the model on its target, made ready (fetched and
    verified) unless the pods fetch it themselves."""
    model = deployment.model
    target = deployment.target
    site = fetch_site(target)
    if not parse_source(model.source).remote:
        return ModelPlacement(path=_file_source(deployment, site))
    if site == FetchSite.WORKER:
        return ModelPlacement(path=_fetch_here(model, target, on_progress=on_progress, event=event))
    request = fetch_request(model, target, node_cache=site == FetchSite.POD)
    if site == FetchSite.POD:
        return ModelPlacement(path="", fetch=request)
    if driver is None:
        raise PermanentDriverError("A fetch on the Docker host needs the target's driver.", reason="ModelFetchFailed")
    try:
        fetched = driver.fetch_model(request, on_progress=on_progress, heartbeat=heartbeat)
        model_cache_record(target=target, model=model)
        evicted = driver.evict_models(
            limit_bytes=cache_limit(target), keep=model.content_hash, last_used=model_cache_last_used(target=target)
        )
    except DriverError as exc:
        raise type(exc)(
            f"Fetching model {model.name!r} on target {target.name!r}: {exc.message}",
            reason=exc.reason,
            cause=exc.cause,
            detail=exc.detail,
        ) from None
    model_cache_forget(target=target, content_hashes=evicted)
    _tell(
        model,
        target,
        event,
        downloaded=fetched.downloaded_bytes,
        files=len(fetched.fetched),
        repaired=list(fetched.repaired),
        evicted=evicted,
    )
    return ModelPlacement(path=fetched.path, volume=fetched.volume)


def _file_source(deployment: Deployment, site: str) -> str:
    model, target = deployment.model, deployment.target
    # Checked again at every start: a folder swapped for a symlink since registration must
    # not hand a replica another tenant's files. The message names no path.
    if not source_allowed(deployment.tenant.slug, model.source):
        raise PermanentDriverError(
            f"Model {model.name!r}: its source no longer resolves under "
            f"{folders_text(deployment.tenant.slug)}; replicas are not started from it.",
            reason="ModelSourceRefused",
        )
    if site != FetchSite.WORKER and in_platform_store(model.source):
        raise PermanentDriverError(
            f"Model {model.name!r} was uploaded to the platform's store, which replicas on target {target.name!r} "
            f"({target.kind}) cannot read: register it from s3:// (or hf://) so that the target fetches it, "
            "or deploy it on a local target.",
            reason="ModelSourceUnsupported",
        )
    return model.source


def fetch_request(model: Model, target: Target, *, node_cache: bool) -> ModelFetch:
    """What a fetch on the target's side needs: the plan and the tenant's own credential for it.
    ``node_cache``: the fetch writes a cache shared by many models, held to the target's limit."""
    if not model.content_hash or not model.manifest:
        raise PermanentDriverError(
            f"Model {model.name!r} has no manifest to verify a fetch against; register it again.",
            reason="ModelSourceUnsupported",
        )
    try:
        plan, credentials = model_fetch_plan(model)
    except SourceError as exc:
        raise PermanentDriverError(f"Fetching model {model.name!r}: {exc.message}", reason=exc.reason) from None
    except CredentialsUnreadable as exc:
        raise PermanentDriverError(str(exc), reason="CredentialsUnreadable") from None
    return ModelFetch(
        content_hash=model.content_hash,
        plan=json.dumps(plan, separators=(",", ":")),
        credentials=json.dumps(credentials, separators=(",", ":")),
        cache_limit_bytes=cache_limit(target) if node_cache else 0,
    )


def _fetch_here(model: Model, target: Target, *, on_progress: ProgressFn, event: EventFn) -> str:
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
    _tell(
        model,
        target,
        event,
        downloaded=result.downloaded_bytes,
        files=len(result.fetched),
        repaired=result.repaired,
        evicted=result.evicted,
    )
    return str(result.path)


def _tell(
    model: Model,
    target: Target,
    event: EventFn,
    *,
    downloaded: int,
    files: int,
    repaired: list[str],
    evicted: list[str],
) -> None:
    if repaired:
        names = ", ".join(repaired[:5])
        event(
            "ModelRepaired",
            f"Model {model.name!r}: {names} in the cache of {target.name!r} did not match the manifest; fetched again",
            True,
        )
    if downloaded:
        event(
            "ModelDownloaded",
            f"Model {model.name!r}: fetched {files} file(s) ({downloaded} bytes) into the cache of {target.name!r}, "
            "verified",
            False,
        )
    if evicted:
        event(
            "ModelCacheEvicted",
            f"The cache of {target.name!r} evicted {len(evicted)} models (size limit)",
            False,
        )
