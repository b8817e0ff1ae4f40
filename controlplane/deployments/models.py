"""Targets (where replicas run), deployments (desired state), replicas (observed state),
the deployment event timeline and short-retention metric samples."""

from __future__ import annotations

from django.db import models

from controlplane.core.models import TenantOwned, TimeStamped
from controlplane.deployments.choices import (
    DesiredState,
    EventType,
    KubeAuth,
    KubeEndpoints,
    Phase,
    ReplicaState,
    TargetKind,
)
from controlplane.deployments.spec import DeploymentSpec


class Target(TimeStamped):
    """Where replicas run. A platform resource: platform admins create it and hold its connection
    settings and credentials; tenants are granted it (``TargetGrant``) and see only its name,
    kind, health and capacity."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=TargetKind.choices, default=TargetKind.LOCAL)
    # docker: unix:// (from settings.HANGAR_DOCKER_SOCKETS), tcp:// with TLS, or ssh://user@host
    docker_url = models.CharField(max_length=500, blank=True, default="")
    # The host address Docker replicas publish their port on, and that the gateway calls.
    publish_host = models.CharField(max_length=253, blank=True, default="127.0.0.1")
    # Encrypted (controlplane.core.crypto) JSON of uploaded secrets: tls_ca, tls_cert, tls_key,
    # ssh_key, kubeconfig. Write-only in the API, never logged, never in audit changes.
    credentials = models.TextField(blank=True, default="")
    # kubernetes: the worker's own service account, or an uploaded kubeconfig (+ context)
    kube_auth = models.CharField(max_length=16, choices=KubeAuth.choices, blank=True, default="")
    kube_context = models.CharField(max_length=200, blank=True, default="")
    kube_namespace = models.CharField(max_length=63, blank=True, default="default")
    # How the gateway reaches replicas: pod IPs (the gateway must be in the pod network) or the
    # deployment's Service DNS name (a gateway inside the cluster; one endpoint per deployment).
    kube_endpoints = models.CharField(max_length=16, choices=KubeEndpoints.choices, default=KubeEndpoints.POD_IP)
    # How replicas reach the model directory on Kubernetes: {"type": "hostPath"|"pvc", ...}
    model_volume = models.JSONField(default=dict, blank=True)
    node_selector = models.JSONField(default=dict, blank=True)
    tolerations = models.JSONField(default=list, blank=True)
    labels = models.JSONField(default=dict, blank=True)
    gpu_inventory = models.JSONField(default=list, blank=True)
    # The node's model cache keeps at most this many bytes (least recently used go first); 0: the
    # platform default (HANGAR_MODEL_CACHE_BYTES).
    model_cache_bytes = models.PositiveBigIntegerField(default=0)
    # Last observed health: {"reachable": bool, "status": str, "reason": str, "version": str, "gpus": int, ...}
    health = models.JSONField(default=dict, blank=True)
    health_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TargetGrant(TimeStamped):
    """A tenant may deploy onto a target. On Kubernetes, ``namespace`` (if set) replaces the
    target's namespace for this tenant's replicas."""

    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="grants")
    tenant = models.ForeignKey("tenancy.Tenant", on_delete=models.CASCADE, related_name="target_grants")
    namespace = models.CharField(max_length=63, blank=True, default="")

    class Meta:
        ordering = ["target_id", "tenant_id"]
        constraints = [models.UniqueConstraint(fields=["target", "tenant"], name="target_grant_unique")]

    def __str__(self) -> str:
        return f"{self.target_id}->{self.tenant_id}"


class Deployment(TenantOwned, DeploymentSpec):
    """A tenant's desired state for one served model; the spec fields come from ``DeploymentSpec``
    (``controlplane.deployments.spec``), the rest is identity and reconcile bookkeeping."""

    name = models.CharField(max_length=63)
    model = models.ForeignKey("catalog.Model", on_delete=models.PROTECT, related_name="deployments")
    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="deployments")
    desired_state = models.CharField(max_length=16, choices=DesiredState.choices, default=DesiredState.RUNNING)
    last_request_at = models.DateTimeField(null=True, blank=True)
    # Fault injection for tests ({"error_rate", "delay_rate", "delay_ms"}): platform admins only
    # (``revisions.deployment_faults_set``), reaches replicas only with HANGAR_FAULT_INJECTION on.
    faults = models.JSONField(default=dict, blank=True)
    # Reconcile bookkeeping
    # generation: bumped on every spec change. template_generation: bumped only when replicas
    # must be replaced (model, runtime options, resources, restart); replicas carry it as the
    # ``hangar.generation`` label, so scaling never restarts existing replicas.
    generation = models.PositiveBigIntegerField(default=1)
    template_generation = models.PositiveBigIntegerField(default=1)
    observed_generation = models.PositiveBigIntegerField(default=0)
    phase = models.CharField(max_length=16, choices=Phase.choices, default=Phase.PENDING, db_index=True)
    phase_message = models.CharField(max_length=1000, blank=True, default="")
    # [{"type", "status": "True"|"False"|"Unknown", "reason", "message", "last_transition_time"}]
    conditions = models.JSONField(default=list, blank=True)
    ready_replicas = models.PositiveIntegerField(default=0)
    # Progress of long work shown to operators: {"step": "...", "detail": "...", "at": iso}
    progress = models.JSONField(default=dict, blank=True)
    reconciled_at = models.DateTimeField(null=True, blank=True)
    # Per-deployment reconcile lease, claimed by compare-and-set (never a transaction held across
    # backend calls). An expired lease means its worker died; the next resync takes over.
    reconcile_lease_owner = models.CharField(max_length=200, blank=True, default="")
    reconcile_lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="deployment_unique_name_per_tenant"),
            models.UniqueConstraint(
                fields=["tenant", "served_model_name"], name="deployment_unique_served_name_per_tenant"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Replica(TenantOwned):
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="replica_set")
    name = models.CharField(max_length=100)
    backend_id = models.CharField(max_length=200, blank=True, default="")
    generation = models.PositiveBigIntegerField(default=0)
    endpoint = models.CharField(max_length=300, blank=True, default="")
    state = models.CharField(max_length=16, choices=ReplicaState.choices, default=ReplicaState.STARTING)
    started_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=1000, blank=True, default="")
    # Graceful removal (workers.draining): out of routing since, asked to stop (SIGTERM) since.
    draining_since = models.DateTimeField(null=True, blank=True)
    stopping_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["deployment_id", "name"]
        constraints = [models.UniqueConstraint(fields=["deployment", "name"], name="replica_unique_name")]

    def __str__(self) -> str:
        return self.name


class DeploymentEvent(models.Model):
    """Append-only timeline entry, written by services and the reconciler."""

    tenant = models.ForeignKey("tenancy.Tenant", on_delete=models.CASCADE, related_name="+")
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    type = models.CharField(max_length=8, choices=EventType.choices, default=EventType.NORMAL)
    reason = models.CharField(max_length=64)
    message = models.CharField(max_length=2000, blank=True, default="")
    actor = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["deployment", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class MetricSample(models.Model):
    """One scrape of a replica's /metrics, reduced to what the dashboard charts (short retention)."""

    tenant = models.ForeignKey("tenancy.Tenant", on_delete=models.CASCADE, related_name="+")
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="metric_samples")
    replica = models.ForeignKey(Replica, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    ts = models.DateTimeField(db_index=True)
    requests_total = models.FloatField(default=0)
    errors_total = models.FloatField(default=0)
    prompt_tokens_total = models.FloatField(default=0)
    completion_tokens_total = models.FloatField(default=0)
    in_flight = models.FloatField(default=0)
    queued = models.FloatField(default=0)
    batch_size = models.FloatField(default=0)
    tokens_per_second = models.FloatField(default=0)
    ttft_p50 = models.FloatField(null=True, blank=True)
    latency_p50 = models.FloatField(null=True, blank=True)
    latency_p95 = models.FloatField(null=True, blank=True)
    memory_bytes = models.FloatField(default=0)

    class Meta:
        ordering = ["-ts"]
        indexes = [models.Index(fields=["deployment", "-ts"])]


class ModelCacheEntry(TimeStamped):
    """A model verified in a target's node cache (written by the worker that fetched or verified it,
    removed when the cache evicts it): what the model page shows as "cached on"."""

    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="model_cache")
    model = models.ForeignKey("catalog.Model", on_delete=models.CASCADE, related_name="cache_entries")
    content_hash = models.CharField(max_length=64)
    size_bytes = models.PositiveBigIntegerField(default=0)
    verified_at = models.DateTimeField()

    class Meta:
        ordering = ["target__name"]
        constraints = [models.UniqueConstraint(fields=["target", "model"], name="model_cache_entry_unique")]


# Revisions and rollouts live in their own module; imported here so that Django registers them.
from controlplane.deployments.rollout_models import Revision, Rollout, RolloutPolicy  # noqa: E402

__all__ = [
    "Deployment",
    "DeploymentEvent",
    "MetricSample",
    "Replica",
    "Revision",
    "Rollout",
    "RolloutPolicy",
    "Target",
    "TargetGrant",
]
