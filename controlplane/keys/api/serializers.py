"""Serializers of gateway API keys. The secret appears once, in the create response."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import serializers

from controlplane.core.api import InputSerializer, TenantChoiceMixin, TenantSlugField
from controlplane.keys.choices import DEFAULT_SCOPES, Scope
from controlplane.keys.models import ApiKey
from controlplane.keys.services import MAX_ALLOWED_MODELS, MAX_BURST_PERCENT

MAX_RATE = 2_147_483_647  # PositiveIntegerField
MAX_BUDGET = 10**12

KEY_FIELDS: tuple[str, ...] = (
    "id",
    "tenant",
    "name",
    "display_prefix",
    "scopes",
    "allowed_models",
    "rpm_limit",
    "tpm_limit",
    "monthly_token_budget",
    "burst_percent",
    "expires_at",
    "revoked_at",
    "last_used_at",
    "active",
    "created_by",
    "created_at",
)


class ApiKeySerializer(serializers.ModelSerializer):
    tenant = TenantSlugField()
    active = serializers.SerializerMethodField()
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = ApiKey
        fields = KEY_FIELDS
        read_only_fields = KEY_FIELDS

    def get_active(self, obj: ApiKey) -> bool:
        return obj.revoked_at is None and (obj.expires_at is None or obj.expires_at > timezone.now())

    # Lists annotate the username (see ApiKeyViewSet.select_list); single objects join.
    def get_created_by(self, obj: ApiKey) -> str | None:
        if hasattr(obj, "created_by_username"):
            return obj.created_by_username  # type: ignore[no-any-return]
        user = obj.created_by
        return user.get_username() if user is not None else None


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.SerializerMethodField(help_text="The full key. Shown only in this response; store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields: tuple[str, ...] = (*KEY_FIELDS, "key")
        read_only_fields: tuple[str, ...] = fields

    def get_key(self, obj: Any) -> str:
        return str(self.context["key"])


class ApiKeyCreateInput(TenantChoiceMixin, InputSerializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices),
        min_length=1,
        max_length=len(Scope.values),
        required=False,
        help_text=f"Defaults to {DEFAULT_SCOPES}.",
    )
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=100),
        max_length=MAX_ALLOWED_MODELS,
        required=False,
        help_text="Served model names this key may use; empty means all of the tenant's.",
    )
    rpm_limit = serializers.IntegerField(min_value=0, max_value=MAX_RATE, required=False)
    tpm_limit = serializers.IntegerField(min_value=0, max_value=MAX_RATE, required=False)
    monthly_token_budget = serializers.IntegerField(min_value=0, max_value=MAX_BUDGET, required=False)
    burst_percent = serializers.IntegerField(
        min_value=0,
        max_value=MAX_BURST_PERCENT,
        required=False,
        help_text="Explicit burst allowance, % of the RPM/TPM limits: in any 60 s window at most "
        "limit + limit * burst_percent / 100. Default 0: at most the limit.",
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
