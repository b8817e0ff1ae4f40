"""Database reads of the gateway (synchronous; the gateway calls them via ``sync_to_async``
only on cache misses). They return plain frozen records, never model instances, so the
async side never touches the ORM."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Sum

from controlplane.deployments.choices import DesiredState, ReplicaState, RolloutState, RolloutStrategy
from controlplane.deployments.models import Deployment, Replica, Rollout
from controlplane.deployments.replica_auth import replica_token
from controlplane.keys.models import ApiKey
from controlplane.usage.models import UsageRecord


@dataclass(frozen=True, slots=True)
class KeyRecord:
    pk: int
    key_id: str
    digest: str
    tenant_id: int
    scopes: frozenset[str]
    allowed_models: frozenset[str]  # empty = every model of the tenant
    rpm_limit: int
    tpm_limit: int
    monthly_token_budget: int
    burst_percent: int  # explicit burst allowance of the key's RPM/TPM limits, % of the limit
    expires_at: float | None  # epoch seconds
    revoked: bool
    tenant_rpm_limit: int
    tenant_tpm_limit: int
    tenant_monthly_token_budget: int
    tenant_burst_percent: int


@dataclass(frozen=True, slots=True)
class ReplicaTarget:
    pk: int
    endpoint: str  # scheme://host:port, from Replica.endpoint only
    generation: int = 0  # the revision it runs


@dataclass(frozen=True, slots=True)
class Split:
    """A canary in progress: ``weight`` % of requests to revision ``canary``, the rest to ``stable``."""

    rollout_id: int
    stable: int
    canary: int
    weight: int
    sticky: str


@dataclass(frozen=True, slots=True)
class Route:
    deployment_id: int
    tenant_id: int
    served_model_name: str
    phase: str
    desired_state: str
    replicas: int
    min_replicas: int
    max_replicas: int
    autoscale: bool
    max_tokens_cap: int
    created: int
    ready: tuple[ReplicaTarget, ...]
    replica_auth: str = ""  # "Bearer <the deployment's replica token>", what its replicas require
    task: str = "generate"  # the model's task: "embed" models answer /v1/embeddings only
    split: Split | None = None  # a canary in progress (controlplane.gateway.traffic)


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def gateway_key_get(*, key_id: str) -> KeyRecord | None:
    """The key with this public id and its tenant's limits, or ``None`` (also when the tenant
    is deactivated: its keys are refused like unknown ones)."""
    row = (
        ApiKey.objects.filter(key_id=key_id, tenant__is_active=True)
        .values(
            "pk",
            "key_id",
            "digest",
            "tenant_id",
            "scopes",
            "allowed_models",
            "rpm_limit",
            "tpm_limit",
            "monthly_token_budget",
            "burst_percent",
            "expires_at",
            "revoked_at",
            "tenant__rpm_limit",
            "tenant__tpm_limit",
            "tenant__monthly_token_budget",
            "tenant__burst_percent",
        )
        .first()
    )
    if row is None:
        return None
    scopes = row["scopes"] if isinstance(row["scopes"], list) else []
    allowed = row["allowed_models"] if isinstance(row["allowed_models"], list) else []
    return KeyRecord(
        pk=row["pk"],
        key_id=row["key_id"],
        digest=row["digest"],
        tenant_id=row["tenant_id"],
        scopes=frozenset(str(s) for s in scopes),
        allowed_models=frozenset(str(m) for m in allowed),
        rpm_limit=row["rpm_limit"],
        tpm_limit=row["tpm_limit"],
        monthly_token_budget=row["monthly_token_budget"],
        burst_percent=row["burst_percent"],
        expires_at=_epoch(row["expires_at"]),
        revoked=row["revoked_at"] is not None,
        tenant_rpm_limit=row["tenant__rpm_limit"],
        tenant_tpm_limit=row["tenant__tpm_limit"],
        tenant_monthly_token_budget=row["tenant__monthly_token_budget"],
        tenant_burst_percent=row["tenant__burst_percent"],
    )


def gateway_legacy_key_ids() -> frozenset[str]:
    """Key ids of the live keys issued before keyed checksums (``ApiKey.legacy_checksum``)."""
    rows = ApiKey.objects.filter(legacy_checksum=True, revoked_at__isnull=True).values_list("key_id", flat=True)
    return frozenset(rows)


def _valid_endpoint(endpoint: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(endpoint)
        return parts.scheme in {"http", "https"} and bool(parts.hostname) and parts.port is not None
    except ValueError:
        return False


def gateway_routes(*, tenant_id: int) -> dict[str, Route]:
    """Served model name -> route for every live deployment of the tenant (two queries)."""
    deployments = list(
        Deployment.objects.filter(tenant_id=tenant_id)
        .exclude(desired_state=DesiredState.DELETED)
        .values(
            "pk",
            "served_model_name",
            "phase",
            "desired_state",
            "replicas",
            "min_replicas",
            "max_replicas",
            "autoscale",
            "max_tokens_cap",
            "created_at",
            "model__task",
            "template_generation",
        )
    )
    ready: dict[int, list[ReplicaTarget]] = {}
    for rep in (
        Replica.objects.filter(tenant_id=tenant_id, state=ReplicaState.READY)
        .exclude(endpoint="")
        .values("pk", "deployment_id", "endpoint", "generation")
        .order_by("pk")
    ):
        endpoint = rep["endpoint"].rstrip("/")
        if _valid_endpoint(endpoint):
            ready.setdefault(rep["deployment_id"], []).append(
                ReplicaTarget(pk=rep["pk"], endpoint=endpoint, generation=rep["generation"])
            )
    splits = _splits(tenant_id, {d["pk"]: d["template_generation"] for d in deployments})
    return {
        d["served_model_name"]: Route(
            deployment_id=d["pk"],
            tenant_id=tenant_id,
            served_model_name=d["served_model_name"],
            phase=d["phase"],
            desired_state=d["desired_state"],
            replicas=d["replicas"],
            min_replicas=d["min_replicas"],
            max_replicas=d["max_replicas"],
            autoscale=d["autoscale"],
            max_tokens_cap=d["max_tokens_cap"],
            created=int(d["created_at"].timestamp()),
            ready=tuple(ready.get(d["pk"], ())),
            replica_auth="Bearer " + replica_token(d["pk"]),
            task=d["model__task"],
            split=splits.get(d["pk"]),
        )
        for d in deployments
    }


def _splits(tenant_id: int, templates: dict[int, int]) -> dict[int, Split]:
    """The canaries in progress of the tenant's deployments (one query)."""
    rows = Rollout.objects.filter(
        tenant_id=tenant_id, strategy=RolloutStrategy.CANARY, state__in=RolloutState.splitting()
    ).values("pk", "deployment_id", "stable_revision", "canary_revision", "weight", "sticky")
    return {
        r["deployment_id"]: Split(
            rollout_id=r["pk"],
            stable=r["stable_revision"],
            canary=r["canary_revision"],
            weight=r["weight"],
            sticky=r["sticky"],
        )
        for r in rows
        if templates.get(r["deployment_id"]) == r["canary_revision"]
    }


def gateway_tokens_used(*, since: datetime, api_key_id: int | None = None, tenant_id: int | None = None) -> int:
    """Prompt + completion tokens metered since ``since`` for a key or a tenant (budget rebuild)."""
    qs = UsageRecord.objects.filter(minute__gte=since)
    if api_key_id is not None:
        qs = qs.filter(api_key_id=api_key_id)
    if tenant_id is not None:
        qs = qs.filter(tenant_id=tenant_id)
    totals = qs.aggregate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"))
    return int(totals["p"] or 0) + int(totals["c"] or 0)


def gateway_deployment_for_wake(*, deployment_id: int) -> Deployment | None:
    return Deployment.objects.filter(pk=deployment_id).first()
