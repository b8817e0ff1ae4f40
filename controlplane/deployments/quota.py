"""Tenant quotas: what a deployment costs, what a tenant uses, and admission of a change.

A tenant's quota (``Tenant.quota_*``, set by platform admins; null = unlimited, 0 = none)
bounds the sum over its deployments that are not deleted of:

- ``gpus``, ``gpu_memory_mb``, ``cpus``, ``memory_mb``: per replica × replicas counted, where
  GPU memory per replica is ``gpus ×`` the largest ``memory_mb`` of the target's
  ``gpu_inventory`` (0 when the target does not declare it);
- ``replicas``: replicas counted, i.e. ``max_replicas`` when autoscaling is on (so the
  autoscaler can move anywhere in its range without asking again), else ``replicas``; 0 while
  the deployment is stopped;
- ``deployments``: 1 per deployment, stopped or not.

Admission (``admit``) runs inside the service's transaction, after the tenant row is locked
(``lock_tenant``), so concurrent creates, scales and starts of one tenant are serialized and can
never overshoot. Lock order everywhere: tenant row first, then the deployment row.

A change is refused only for resources it increases: a tenant whose quota was lowered below its
usage may still stop, scale down or shrink its deployments.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from django.db.models import QuerySet

from controlplane.core.exceptions import Conflict, NotFound
from controlplane.deployments.choices import DesiredState
from controlplane.deployments.models import Deployment, Target
from controlplane.tenancy.access import Access
from controlplane.tenancy.models import QUOTA_FIELDS, Tenant

RESOURCES = tuple(QUOTA_FIELDS)
RESOURCE_LABELS: dict[str, str] = {
    "gpus": "GPUs",
    "gpu_memory_mb": "GPU memory (MB)",
    "cpus": "CPUs",
    "memory_mb": "Memory (MB)",
    "replicas": "Replicas",
    "deployments": "Deployments",
}
# Float sums (CPUs) are compared and shown at this precision, so 0.1 + 0.2 fits a quota of 0.3.
_DIGITS = 6


@dataclass(frozen=True)
class Cost:
    """What one deployment (or a sum of them) takes from its tenant's quota."""

    gpus: int = 0
    gpu_memory_mb: int = 0
    cpus: float = 0.0
    memory_mb: int = 0
    replicas: int = 0
    deployments: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __sub__(self, other: Cost) -> Cost:
        return Cost(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})

    def get(self, resource: str) -> float:
        value = getattr(self, resource)
        return round(value, _DIGITS) if isinstance(value, float) else value


FREE = Cost()


class QuotaExceeded(Conflict):
    """A change would take a tenant over its quota. The API body carries, for each exceeded
    resource, ``{"used", "requested", "allowed"}``: what the tenant uses now, what this change
    adds, and the limit."""

    code = "quota_exceeded"

    def __init__(self, exceeded: dict[str, dict[str, float]]) -> None:
        parts = [
            f"{resource}: {e['used']:g} in use + {e['requested']:g} requested > {e['allowed']:g} allowed"
            for resource, e in exceeded.items()
        ]
        super().__init__("Quota exceeded (" + "; ".join(parts) + ").")
        self.exceeded = exceeded

    def extra(self) -> dict[str, Any]:
        return {"quota": self.exceeded}


# ----------------------------------------------------------------------------- cost


def gpu_memory_per_gpu(gpu_inventory: Any) -> int:
    """The largest ``memory_mb`` declared in a target's ``gpu_inventory``; 0 when unknown."""
    best = 0
    for entry in gpu_inventory if isinstance(gpu_inventory, list) else []:
        value = entry.get("memory_mb") if isinstance(entry, Mapping) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > best:
            best = value
    return best


def replicas_counted(*, desired_state: str, autoscale: bool, replicas: int, max_replicas: int) -> int:
    if desired_state != DesiredState.RUNNING:
        return 0
    return max_replicas if autoscale else replicas


def spec_cost(
    *,
    desired_state: str,
    autoscale: bool,
    replicas: int,
    max_replicas: int,
    gpus: int,
    cpus: float,
    memory_mb: int,
    gpu_inventory: Any,
) -> Cost:
    if desired_state == DesiredState.DELETED:
        return FREE
    counted = replicas_counted(
        desired_state=desired_state, autoscale=autoscale, replicas=replicas, max_replicas=max_replicas
    )
    return Cost(
        gpus=gpus * counted,
        gpu_memory_mb=gpus * gpu_memory_per_gpu(gpu_inventory) * counted,
        cpus=cpus * counted,
        memory_mb=memory_mb * counted,
        replicas=counted,
        deployments=1,
    )


def deployment_cost(deployment: Deployment, *, target: Target | None = None) -> Cost:
    """The cost of ``deployment`` as it stands in memory (saved or not; pass ``target`` to
    avoid loading it)."""
    target = target if target is not None else deployment.target
    return spec_cost(
        desired_state=deployment.desired_state,
        autoscale=deployment.autoscale,
        replicas=deployment.replicas,
        max_replicas=deployment.max_replicas,
        gpus=deployment.gpus,
        cpus=deployment.cpus,
        memory_mb=deployment.memory_mb,
        gpu_inventory=target.gpu_inventory,
    )


_COST_COLUMNS = (
    "id",
    "tenant_id",
    "desired_state",
    "autoscale",
    "replicas",
    "max_replicas",
    "gpus",
    "cpus",
    "memory_mb",
    "target__gpu_inventory",
)


def _deployment_costs(tenant_ids: Iterable[int]) -> Iterator[tuple[int, int, Cost]]:
    """(deployment id, tenant id, cost) of every non-deleted deployment of the tenants, in one query."""
    rows = (
        Deployment.objects.filter(tenant_id__in=list(tenant_ids))
        .exclude(desired_state=DesiredState.DELETED)
        .order_by()
        .values_list(*_COST_COLUMNS)
    )
    for pk, tenant_id, state, autoscale, replicas, max_replicas, gpus, cpus, memory_mb, inventory in rows:
        cost = spec_cost(
            desired_state=state,
            autoscale=autoscale,
            replicas=replicas,
            max_replicas=max_replicas,
            gpus=gpus,
            cpus=cpus,
            memory_mb=memory_mb,
            gpu_inventory=inventory,
        )
        yield pk, tenant_id, cost


# ----------------------------------------------------------------------------- usage (reads)


def quota_limits(tenant: Tenant) -> dict[str, float | None]:
    """{resource: limit or None (unlimited)}."""
    return {resource: getattr(tenant, field) for resource, field in QUOTA_FIELDS.items()}


def _usage_view(tenant: Tenant, used: Cost) -> dict[str, dict[str, float | None]]:
    limits = quota_limits(tenant)
    return {resource: {"used": used.get(resource), "allowed": limits[resource]} for resource in RESOURCES}


def tenants_quota_usage(tenants: Iterable[Tenant]) -> dict[int, dict[str, dict[str, float | None]]]:
    """``tenant_quota_usage`` of many tenants in one query: {tenant id: {resource: {used, allowed}}}."""
    tenants = list(tenants)
    used: dict[int, Cost] = {t.pk: FREE for t in tenants}
    for _, tenant_id, cost in _deployment_costs(used):
        used[tenant_id] += cost
    return {t.pk: _usage_view(t, used[t.pk]) for t in tenants}


def tenant_quota_usage(tenant: Tenant) -> dict[str, dict[str, float | None]]:
    """{resource: {"used": ..., "allowed": limit or None}} for one tenant."""
    return tenants_quota_usage([tenant])[tenant.pk]


def quota_bars(usage: Mapping[str, Mapping[str, float | None]]) -> list[dict[str, Any]]:
    """The limited resources of a ``tenant_quota_usage`` answer, as bars for a page:
    {resource, label, used, allowed, percent (0-100), full}. Unlimited ones are left out."""
    bars = []
    for resource in RESOURCES:
        used, allowed = usage[resource]["used"] or 0, usage[resource]["allowed"]
        if allowed is None:
            continue
        percent = min(100, round(100 * used / allowed)) if allowed else (100 if used else 0)
        bars.append(
            {
                "resource": resource,
                "label": RESOURCE_LABELS[resource],
                "used": used,
                "allowed": allowed,
                "percent": percent,
                "full": used >= allowed,
            }
        )
    return bars


def quota_tenant_list(*, access: Access) -> QuerySet[Tenant]:
    """Every tenant, for platform admins (quotas are a platform concern)."""
    access.require_platform_admin()
    return Tenant.objects.all()


def quota_tenant_get(*, access: Access, slug: str) -> Tenant:
    access.require_platform_admin()
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        raise NotFound("Not found.")
    return tenant


# ----------------------------------------------------------------------------- admission


def lock_tenant(tenant_id: int) -> Tenant:
    """Lock the tenant row for the rest of the transaction: admissions of one tenant serialize.

    ``FOR NO KEY UPDATE``, not ``FOR UPDATE``: it conflicts with itself (and with a quota
    change), but not with the ``FOR KEY SHARE`` lock that inserting any row referencing the
    tenant takes. The reconciler appends events (which reference the tenant) while it holds a
    deployment row; with ``FOR UPDATE`` here, a service holding the tenant and waiting for that
    deployment would deadlock with it.
    """
    return Tenant.objects.select_for_update(no_key=True).get(pk=tenant_id)


def admit(tenant: Tenant | int, *, exclude_deployment_id: int | None, new_cost: Cost) -> None:
    """Refuse with ``QuotaExceeded`` a change that gives one deployment ``new_cost``.

    ``exclude_deployment_id`` is the deployment being changed (None for a create); its current
    cost, read from the database, is what the change replaces. The tenant row is locked first
    (a no-op when the service already holds it), so the sum read here cannot be overtaken by a
    concurrent admission of the same tenant before this transaction commits.
    """
    locked = lock_tenant(tenant if isinstance(tenant, int) else tenant.pk)
    limits = {r: v for r, v in quota_limits(locked).items() if v is not None}
    if not limits:
        return
    used = old = FREE
    for pk, _, cost in _deployment_costs([locked.pk]):
        used += cost
        if pk == exclude_deployment_id:
            old = cost
    exceeded: dict[str, dict[str, float]] = {}
    for resource, allowed in limits.items():
        requested = round(new_cost.get(resource) - old.get(resource), _DIGITS)
        if requested > 0 and round(used.get(resource) + requested, _DIGITS) > allowed:
            exceeded[resource] = {"used": used.get(resource), "requested": requested, "allowed": allowed}
    if exceeded:
        raise QuotaExceeded(exceeded)


__all__ = [
    "QUOTA_FIELDS",
    "RESOURCES",
    "RESOURCE_LABELS",
    "Cost",
    "QuotaExceeded",
    "admit",
    "deployment_cost",
    "gpu_memory_per_gpu",
    "lock_tenant",
    "quota_bars",
    "quota_limits",
    "quota_tenant_get",
    "quota_tenant_list",
    "tenant_quota_usage",
    "tenants_quota_usage",
]
