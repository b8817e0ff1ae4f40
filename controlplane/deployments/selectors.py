"""Reads of targets, deployments, replicas, events and metrics, scoped to the caller's tenants."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from controlplane.core.exceptions import NotFound
from controlplane.deployments.models import Deployment, DeploymentEvent, MetricSample, Replica, Target
from controlplane.tenancy.access import Access
from controlplane.tenancy.choices import Perm


def target_list(*, access: Access, filters: dict[str, Any] | None = None) -> QuerySet[Target]:
    qs = Target.objects.filter(tenant_id__in=access.tenant_ids(Perm.TARGET_VIEW)).select_related("tenant")
    filters = filters or {}
    if filters.get("tenant"):
        qs = qs.filter(tenant__slug=filters["tenant"])
    if filters.get("kind"):
        qs = qs.filter(kind=filters["kind"])
    return qs


def target_get(*, access: Access, pk: int) -> Target:
    try:
        return target_list(access=access).get(pk=pk)
    except Target.DoesNotExist:
        raise NotFound("Target not found.") from None


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
