from django.contrib import admin

from controlplane.deployments.models import Deployment, DeploymentEvent, MetricSample, Replica, Target, TargetGrant


@admin.register(Target)
class TargetAdmin(admin.ModelAdmin):
    """Read-only: targets change through the platform API or dashboard (validation, audit,
    encryption of credentials); the ciphertext is never shown."""

    list_display = ("name", "kind", "health_checked_at")
    list_filter = ("kind",)
    exclude = ("credentials",)

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(TargetGrant)
class TargetGrantAdmin(admin.ModelAdmin):
    list_display = ("target", "tenant", "namespace", "created_at")

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ("name", "tenant", "phase", "replicas", "ready_replicas", "generation", "observed_generation")
    list_filter = ("phase",)
    search_fields = ("name", "served_model_name")


@admin.register(Replica)
class ReplicaAdmin(admin.ModelAdmin):
    list_display = ("name", "deployment", "state", "endpoint", "generation", "last_heartbeat_at")
    list_filter = ("state",)


@admin.register(DeploymentEvent)
class DeploymentEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "deployment", "type", "reason", "message")
    list_filter = ("type",)

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False  # append-only


@admin.register(MetricSample)
class MetricSampleAdmin(admin.ModelAdmin):
    list_display = ("ts", "deployment", "replica", "tokens_per_second", "in_flight")
