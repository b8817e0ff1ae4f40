"""Audit rows in the admin: shown, never added, changed or deleted (the table is append-only)."""

from django.contrib import admin

from controlplane.audit.models import AuditLog
from controlplane.core.admin import ReadOnlyAdmin


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor_repr", "action", "object_type", "object_id", "tenant", "source_ip")
    list_filter = ("action",)
