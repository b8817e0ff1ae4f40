"""Serializers of tenants, memberships and personal access tokens."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from controlplane.core.api import InputSerializer, TenantChoiceMixin, TenantSlugField
from controlplane.deployments.api.quotas import QuotaListSerializer, QuotaUsageField
from controlplane.tenancy.access import Access
from controlplane.tenancy.choices import Role, TokenScope
from controlplane.tenancy.models import AccessToken, Membership, Tenant

MAX_BURST_PERCENT = 100  # as controlplane.keys.services
MAX_LIMIT = 2_147_483_647  # PositiveIntegerField
MAX_BUDGET = 9_223_372_036_854_775_807  # PositiveBigIntegerField

TENANT_FIELDS = (
    "id",
    "slug",
    "name",
    "rpm_limit",
    "tpm_limit",
    "monthly_token_budget",
    "burst_percent",
    "role",
    "quota",
    "created_at",
    "updated_at",
)


class TenantSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="Your role in this tenant.")
    quota = QuotaUsageField()

    class Meta:
        model = Tenant
        fields = TENANT_FIELDS
        read_only_fields = TENANT_FIELDS
        list_serializer_class = QuotaListSerializer

    def get_role(self, obj: Tenant) -> str | None:
        access = self.context.get("access")
        return access.role(obj.pk) if isinstance(access, Access) else None


class TenantLimitsInput(InputSerializer):
    name = serializers.CharField(max_length=100)
    rpm_limit = serializers.IntegerField(min_value=0, max_value=MAX_LIMIT, required=False)
    tpm_limit = serializers.IntegerField(min_value=0, max_value=MAX_LIMIT, required=False)
    monthly_token_budget = serializers.IntegerField(min_value=0, max_value=MAX_BUDGET, required=False)
    burst_percent = serializers.IntegerField(
        min_value=0,
        max_value=MAX_BURST_PERCENT,
        required=False,
        help_text="Explicit burst allowance of the tenant-wide RPM/TPM limits, % of the limit (default 0).",
    )


class TenantUpdateInput(TenantLimitsInput):
    read_only_names = frozenset({"id", "slug", "role", "quota", "created_at", "updated_at"})
    name = serializers.CharField(max_length=100, required=False)


class MembershipSerializer(serializers.ModelSerializer):
    tenant = TenantSlugField()
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ("id", "tenant", "username", "role", "created_at", "updated_at")
        read_only_fields = fields


class MembershipCreateInput(TenantChoiceMixin, InputSerializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Role.choices)


class MembershipUpdateInput(InputSerializer):
    read_only_names = frozenset({"id", "tenant", "username", "created_at", "updated_at"})
    role = serializers.ChoiceField(choices=Role.choices)


class AccessTokenSerializer(serializers.ModelSerializer):
    active = serializers.SerializerMethodField()

    class Meta:
        model = AccessToken
        fields: tuple[str, ...] = (
            "id",
            "name",
            "display_prefix",
            "scopes",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "last_used_ip",
            "active",
            "created_at",
        )
        read_only_fields: tuple[str, ...] = fields

    def get_active(self, obj: AccessToken) -> bool:
        from django.utils import timezone

        return obj.revoked_at is None and (obj.expires_at is None or obj.expires_at > timezone.now())


class AccessTokenCreatedSerializer(AccessTokenSerializer):
    token = serializers.SerializerMethodField(help_text="The secret token. Shown only in this response.")

    class Meta(AccessTokenSerializer.Meta):
        fields: tuple[str, ...] = (*AccessTokenSerializer.Meta.fields, "token")
        read_only_fields: tuple[str, ...] = fields

    def get_token(self, obj: Any) -> str:
        return str(self.context["token"])


class AccessTokenCreateInput(InputSerializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=TokenScope.choices),
        min_length=1,
        max_length=len(TokenScope.values),
        required=False,
        help_text="What the token may do: `read`, `write` (includes read), `admin` (includes write: members, "
        'API keys, tenant settings, the platform). Default: `["read"]`. Never more than your roles allow.',
    )
    expires_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="When the token stops working; omitted or null: the installation's default lifetime "
        "(`HANGAR_TOKEN_DEFAULT_DAYS`). At most `HANGAR_TOKEN_MAX_DAYS` ahead.",
    )


class AccessTokenRevokeInput(InputSerializer):
    revoke_keys = serializers.BooleanField(
        required=False, default=False, help_text="Also revoke every API key this token created."
    )
