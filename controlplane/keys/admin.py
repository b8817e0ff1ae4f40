from django.contrib import admin

from controlplane.core.admin import ReadOnlyAdmin
from controlplane.keys.models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    """Keys change through the services only: a revocation there also purges the gateways' caches."""

    list_display = ("display_prefix", "name", "tenant", "rpm_limit", "tpm_limit", "expires_at", "revoked_at")
    exclude = ("digest",)
