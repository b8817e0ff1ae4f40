from django.contrib import admin

from controlplane.tenancy.models import AccessToken, Membership, Tenant


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "rpm_limit", "tpm_limit", "monthly_token_budget", "created_at")
    search_fields = ("slug", "name")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("role",)


@admin.register(AccessToken)
class AccessTokenAdmin(admin.ModelAdmin):
    list_display = ("display_prefix", "user", "name", "expires_at", "revoked_at", "last_used_at")
    readonly_fields = ("key_id", "digest", "display_prefix", "last_used_at")
