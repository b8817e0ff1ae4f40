"""Reads of targets, grants, deployments, replicas, events and metrics, scoped to the caller's
tenants (or, for the ``platform_*`` selectors, to platform admins)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from controlplane.core.crypto import CredentialsUnreadable, decrypt_json
from controlplane.core.exceptions import NotFound
from controlplane.deployments.models import Deployment, DeploymentEvent, MetricSample, Replica, Target, TargetGrant
from controlplane.tenancy.access import Access
from controlplane.tenancy.choices import Perm
from controlplane.tenancy.models import Tenant


def target_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[Target]:
    """Targets granted to the caller's tenants (each once); ``tenant`` (a slug) narrows to the
    targets granted to that tenant."""
    tenant_ids = access.tenant_ids(Perm.TARGET_VIEW)
    filters = filters or {}
    if filters.get("tenant"):
        tenant_ids = [tid for tid in tenant_ids if access.slugs.get(tid) == filters["tenant"]]
    granted = TargetGrant.objects.filter(tenant_id__in=tenant_ids).values("target_id")
    qs = Target.objects.filter(pk__in=granted)
    if filters.get("kind"):
        qs = qs.filter(kind=filters["kind"])
    return qs


def target_get(*, access: Access, pk: int) -> Target:
    try:
        return target_list(access=access).get(pk=pk)
    except Target.DoesNotExist:
        raise NotFound("Target not found.") from None


def grant_for(*, target_id: int, tenant_id: int) -> TargetGrant | None:
    """The grant letting ``tenant_id`` deploy onto ``target_id``, if there is one."""
    return TargetGrant.objects.filter(target_id=target_id, tenant_id=tenant_id).first()


def target_credentials(target: Target) -> dict[str, str]:
    """The target's decrypted credentials, for the driver that connects with them and nothing else
    (never logged, never shown). Raises ``CredentialsUnreadable`` if no configured key opens them."""
    return decrypt_json(target.credentials)


def target_credential_names(target: Target) -> set[str]:
    """Which credentials the target holds (their names only); none if they cannot be read."""
    try:
        return set(decrypt_json(target.credentials))
    except CredentialsUnreadable:
        return set()


# -- platform: every target and grant, for platform admins only


def platform_target_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[Target]:
    access.require_platform_admin()
    qs = Target.objects.all()
    filters = filters or {}
    if filters.get("kind"):
        qs = qs.filter(kind=filters["kind"])
    if filters.get("name"):
        qs = qs.filter(name=filters["name"])
    if filters.get("tenant"):
        qs = qs.filter(pk__in=TargetGrant.objects.filter(tenant__slug=filters["tenant"]).values("target_id"))
    return qs


def platform_target_get(*, access: Access, pk: int) -> Target:
    try:
        return platform_target_list(access=access).get(pk=pk)
    except Target.DoesNotExist:
        raise NotFound("Target not found.") from None


def platform_tenant_by_slug(*, access: Access, slug: str) -> Tenant | None:
    """The tenant a platform admin names by slug (to grant it a target), if it exists."""
    access.require_platform_admin()
    return Tenant.objects.filter(slug=slug).first()


def platform_grant_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[TargetGrant]:
    access.require_platform_admin()
    qs = TargetGrant.objects.select_related("target", "tenant")
    filters = filters or {}
    if filters.get("target"):
        qs = qs.filter(target_id=filters["target"])
    if filters.get("tenant"):
        qs = qs.filter(tenant__slug=filters["tenant"])
    return qs


def platform_grant_get(*, access: Access, pk: int) -> TargetGrant:
    try:
        return platform_grant_list(access=access).get(pk=pk)
    except TargetGrant.DoesNotExist:
        raise NotFound("Grant not found.") from None


def deployment_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[Deployment]:
    qs = Deployment.objects.filter(tenant_id__in=access.tenant_ids(Perm.DEPLOYMENT_VIEW)).select_related(
        "tenant", "model", "target"
    )
    filters = filters or {}
    if filters.get("tenant"):
        qs = qs.filter(tenant__slug=filters["tenant"])
    for key in ("phase", "name", "served_model_name"):
        if filters.get(key):
            qs = qs.filter(**{key: filters[key]})
    if filters.get("model"):
        qs = qs.filter(model__name=filters["model"])
    if filters.get("target"):
        qs = qs.filter(target__name=filters["target"])
    return qs


def deployment_get(*, access: Access, pk: int) -> Deployment:
    try:
        return deployment_list(access=access).get(pk=pk)
    except Deployment.DoesNotExist:
        raise NotFound("Deployment not found.") from None


def replica_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[Replica]:
    qs = Replica.objects.filter(tenant_id__in=access.tenant_ids(Perm.DEPLOYMENT_VIEW)).select_related("deployment")
    filters = filters or {}
    if filters.get("deployment"):
        qs = qs.filter(deployment_id=filters["deployment"])
    if filters.get("state"):
        qs = qs.filter(state=filters["state"])
    return qs


def replica_get(*, access: Access, pk: int) -> Replica:
    try:
        return replica_list(access=access).select_related("deployment__target").get(pk=pk)
    except Replica.DoesNotExist:
        raise NotFound("Replica not found.") from None


def event_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[DeploymentEvent]:
    qs = DeploymentEvent.objects.filter(tenant_id__in=access.tenant_ids(Perm.DEPLOYMENT_VIEW))
    filters = filters or {}
    if filters.get("deployment"):
        qs = qs.filter(deployment_id=filters["deployment"])
    if filters.get("type"):
        qs = qs.filter(type=filters["type"])
    if filters.get("reason"):
        qs = qs.filter(reason=filters["reason"])
    return qs


def metric_samples(*, access: Access, deployment_id: int, limit: int = 300) -> QuerySet[MetricSample]:
    return MetricSample.objects.filter(
        tenant_id__in=access.tenant_ids(Perm.DEPLOYMENT_VIEW), deployment_id=deployment_id
    ).order_by("-ts")[:limit]
