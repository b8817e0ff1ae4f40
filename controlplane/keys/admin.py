from django.contrib import admin

from controlplane.keys.models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("display_prefix", "name", "tenant", "rpm_limit", "tpm_limit", "expires_at", "revoked_at")
    readonly_fields = ("key_id", "digest", "display_prefix", "last_used_at")
