"""Which targets hold which models in their node cache (written by workers, read by the model page
and by the eviction of a Docker host's model volumes)."""

from __future__ import annotations

from django.db.models import Max, QuerySet
from django.utils import timezone

from controlplane.catalog.models import Model
from controlplane.deployments.models import ModelCacheEntry, Target


def model_cache_record(*, target: Target, model: Model) -> None:
    """``model`` was just verified in ``target``'s cache."""
    ModelCacheEntry.objects.update_or_create(
        target=target,
        model=model,
        defaults={"content_hash": model.content_hash, "size_bytes": model.size_bytes, "verified_at": timezone.now()},
    )


def model_cache_forget(*, target: Target, content_hashes: list[str]) -> None:
    """The cache of ``target`` evicted these models."""
    if content_hashes:
        ModelCacheEntry.objects.filter(target=target, content_hash__in=content_hashes).delete()


def model_cached_on(*, model: Model) -> QuerySet[ModelCacheEntry]:
    """The targets whose cache holds ``model`` as registered (its current content hash).

    Only target names and times are shown: a tenant sees where its model is cached, nothing of
    the target's settings.
    """
    return (
        ModelCacheEntry.objects.filter(model=model, content_hash=model.content_hash)
        .select_related("target")
        .only("target__name", "target__kind", "verified_at", "size_bytes", "content_hash", "model_id")
    )


def model_cache_last_used(*, target: Target) -> dict[str, float]:
    """When each content hash in ``target``'s cache was last verified (a replica started on it),
    as Unix times: the order in which the target's cache evicts."""
    rows = ModelCacheEntry.objects.filter(target=target).values("content_hash").annotate(last=Max("verified_at"))
    return {row["content_hash"]: row["last"].timestamp() for row in rows}
