"""Serializer of audit rows."""

from __future__ import annotations

from rest_framework import serializers

from controlplane.audit.models import AuditLog
from controlplane.core.api import TenantSlugField

AUDIT_FIELDS = (
    "id",
    "tenant",
    "actor",
    "action",
    "object_type",
    "object_id",
    "object_repr",
    "changes",
    "source_ip",
    "created_at",
)


class AuditLogSerializer(serializers.ModelSerializer):
    # Null for rows about an account rather than a tenant (logins, tokens: ``subject_user``).
    tenant = TenantSlugField(allow_null=True)
    actor = serializers.CharField(source="actor_repr", read_only=True, help_text="Username, or system:<via>.")

    class Meta:
        model = AuditLog
        fields = AUDIT_FIELDS
        read_only_fields = AUDIT_FIELDS
