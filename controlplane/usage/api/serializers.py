"""Serializers of metered usage (per key, model and minute) and per-key totals."""

from __future__ import annotations

from rest_framework import serializers

from controlplane.core.api import TenantSlugField
from controlplane.usage.models import UsageRecord

USAGE_FIELDS = (
    "id",
    "tenant",
    "api_key",
    "model",
    "minute",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "errors",
    "latency_ms_sum",
)


class UsageRecordSerializer(serializers.ModelSerializer):
    tenant = TenantSlugField()

    class Meta:
        model = UsageRecord
        fields = USAGE_FIELDS
        read_only_fields = USAGE_FIELDS


class UsageTotalsSerializer(serializers.Serializer):
    api_key = serializers.IntegerField(source="api_key_id", allow_null=True, help_text="null: the key was deleted.")
    api_key_name = serializers.CharField(source="api_key__name", allow_null=True)
    display_prefix = serializers.CharField(source="api_key__display_prefix", allow_null=True)
    requests = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    errors = serializers.IntegerField()  # type: ignore[assignment]  # a field, not Serializer.errors
    latency_ms_sum = serializers.FloatField()
    minutes = serializers.IntegerField(help_text="Minutes with at least one request.")
