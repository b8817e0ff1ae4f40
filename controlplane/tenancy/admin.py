"""Tenants, memberships, tokens, users and groups: read-only here (see ``controlplane.core.admin``).

Users and groups are the platform services' too (creation, deactivation, password resets, the
platform-admin right, which a group can carry), so Django's own admin classes for them are
replaced by read-only ones.
"""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group

from controlplane.core.admin import ReadOnlyAdmin
from controlplane.tenancy.models import AccessToken, Membership, Tenant


@admin.register(Tenant)
class TenantAdmin(ReadOnlyAdmin):
    list_display = ("slug", "name", "is_active", "rpm_limit", "tpm_limit", "monthly_token_budget", "created_at")
    search_fields = ("slug", "name")


@admin.register(Membership)
class MembershipAdmin(ReadOnlyAdmin):
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("role",)


@admin.register(AccessToken)
class AccessTokenAdmin(ReadOnlyAdmin):
    list_display = ("display_prefix", "user", "name", "expires_at", "revoked_at", "last_used_at")
    exclude = ("digest",)


class ReadOnlyUserAdmin(ReadOnlyAdmin, UserAdmin):
    pass


class ReadOnlyGroupAdmin(ReadOnlyAdmin, GroupAdmin):
    pass


for model, model_admin in ((get_user_model(), ReadOnlyUserAdmin), (Group, ReadOnlyGroupAdmin)):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
