from django.contrib import admin

from controlplane.audit.models import AuditLog


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    list_display = ("created_at", "actor_repr", "action", "object_type", "object_id", "tenant", "source_ip")
    list_filter = ("action",)

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False  # append-only

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
