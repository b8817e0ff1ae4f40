from django.contrib import admin

from controlplane.core.admin import ReadOnlyAdmin
from controlplane.deployments.models import Deployment, DeploymentEvent, MetricSample, Replica, Target, TargetGrant


@admin.register(Target)
class TargetAdmin(ReadOnlyAdmin):
    """Targets change through the platform API or dashboard (validation, audit, encryption of
    credentials); the ciphertext is never shown."""

    list_display = ("name", "kind", "health_checked_at")
    list_filter = ("kind",)
    exclude = ("credentials",)


@admin.register(TargetGrant)
class TargetGrantAdmin(ReadOnlyAdmin):
    list_display = ("target", "tenant", "namespace", "created_at")


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = ("name", "tenant", "phase", "replicas", "ready_replicas", "generation", "observed_generation")
    list_filter = ("phase",)
    search_fields = ("name", "served_model_name")


@admin.register(Replica)
class ReplicaAdmin(ReadOnlyAdmin):
    list_display = ("name", "deployment", "state", "endpoint", "generation", "last_heartbeat_at")
    list_filter = ("state",)


@admin.register(DeploymentEvent)
class DeploymentEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "deployment", "type", "reason", "message")
    list_filter = ("type",)


@admin.register(MetricSample)
class MetricSampleAdmin(ReadOnlyAdmin):
    list_display = ("ts", "deployment", "replica", "tokens_per_second", "in_flight")
