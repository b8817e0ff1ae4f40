"""Viewset of the audit trail (admins and owners of a tenant)."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers

from controlplane.audit import selectors
from controlplane.audit.api.serializers import AuditLogSerializer
from controlplane.audit.models import AuditLog
from controlplane.core.exceptions import NotFound
from controlplane.tenancy.api.base import ScopedViewSet
from controlplane.tenancy.choices import Perm


@extend_schema_view(
    list=extend_schema(summary="List audit rows (newest first)"),
    retrieve=extend_schema(summary="Show an audit row"),
)
@extend_schema(tags=["audit"])
class AuditLogViewSet(ScopedViewSet):
    serializer_class = AuditLogSerializer
    http_method_names = ["get", "head", "options"]
    filter_fields: ClassVar[dict[str, serializers.Field]] = {
        "tenant": serializers.SlugField(max_length=50),
        "action": serializers.CharField(max_length=64, help_text="e.g. deployment.scale"),
        "object_type": serializers.CharField(max_length=64, help_text="e.g. deployment"),
        "object_id": serializers.CharField(max_length=64),
        "actor": serializers.CharField(max_length=150, help_text="Username."),
        "since": serializers.DateTimeField(),
        "until": serializers.DateTimeField(),
    }
    ordering_fields = ("id", "created_at", "action")
    list_perm = Perm.AUDIT_VIEW

    def check_list_perm(self) -> None:
        if not self.access.is_platform_admin:  # platform admins see the platform's and accounts' rows
            super().check_list_perm()

    def get_filters(self) -> dict[str, Any]:
        filters = super().get_filters()
        if "actor" in filters:
            filters["actor_repr"] = filters.pop("actor")
        return filters

    def select_list(self, filters: dict[str, Any]) -> QuerySet[AuditLog]:
        return selectors.audit_list(access=self.access, filters=filters)

    def select_one(self, lookup: str) -> AuditLog:
        row = self.select_list({}).filter(pk=int(lookup)).first()
        if row is None:
            raise NotFound("Audit row not found.")
        return row
