"""Tenant quotas in the API: ``/api/v1/platform/quotas/`` for platform admins (every tenant's
limits and usage; PATCH by tenant slug), and the read-only ``quota`` of ``/api/v1/tenants/``.

A quota is a limit per resource (null = unlimited, 0 = none); usage is what the tenant's
deployments take (``controlplane.deployments.quota``).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.core.api import InputSerializer
from controlplane.deployments import quota
from controlplane.tenancy.api.base import PlatformViewSet
from controlplane.tenancy.models import Tenant
from controlplane.tenancy.services import tenant_quota_set

MAX_INT = 2_147_483_647  # PositiveIntegerField
MAX_BIGINT = 9_223_372_036_854_775_807  # PositiveBigIntegerField
MAX_CPUS = 1e9


class QuotaLineSerializer(serializers.Serializer):
    used = serializers.FloatField(help_text="What the tenant's deployments take now.")
    allowed = serializers.FloatField(allow_null=True, help_text="The limit: null = unlimited, 0 = none.")


class QuotaUsageSerializer(serializers.Serializer):
    """Schema of ``{resource: {used, allowed}}``."""

    gpus = QuotaLineSerializer()
    gpu_memory_mb = QuotaLineSerializer()
    cpus = QuotaLineSerializer()
    memory_mb = QuotaLineSerializer()
    replicas = QuotaLineSerializer()
    deployments = QuotaLineSerializer()


@extend_schema_field(QuotaUsageSerializer)
class QuotaUsageField(serializers.Field):
    """A tenant's usage against its quota, read-only. In a list, ``QuotaListSerializer`` loads
    the usage of every row in one query and leaves it on the row serializer."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["read_only"] = True
        kwargs["source"] = "*"
        kwargs.setdefault(
            "help_text",
            "Usage against quota per resource: {used, allowed}; allowed null = unlimited, 0 = none. "
            "Autoscaled deployments count at max_replicas; stopped ones count no replicas.",
        )
        super().__init__(**kwargs)

    def to_representation(self, value: Tenant) -> dict[str, dict[str, float | None]]:
        loaded = getattr(self.parent, "quota_usage", None)
        if isinstance(loaded, dict) and value.pk in loaded:
            return dict(loaded[value.pk])
        return quota.tenant_quota_usage(value)


class QuotaListSerializer(serializers.ListSerializer):
    """Lists of tenants: one usage query for the page, not one per tenant."""

    def to_representation(self, data: Any) -> list[Any]:
        tenants = list(data.all() if hasattr(data, "all") else data)
        self.child.quota_usage = quota.tenants_quota_usage(tenants)  # type: ignore[union-attr]
        return super().to_representation(tenants)


def _limit(resource: str) -> serializers.Field:
    source = f"quota_{resource}"
    if resource == "cpus":
        return serializers.FloatField(source=source, allow_null=True, read_only=True)
    return serializers.IntegerField(source=source, allow_null=True, read_only=True)


class PlatformQuotaSerializer(serializers.ModelSerializer):
    tenant = serializers.CharField(source="slug", read_only=True, help_text="The tenant's slug.")
    gpus = _limit("gpus")
    gpu_memory_mb = _limit("gpu_memory_mb")
    cpus = _limit("cpus")
    memory_mb = _limit("memory_mb")
    replicas = _limit("replicas")
    deployments = _limit("deployments")
    quota = QuotaUsageField()

    class Meta:
        model = Tenant
        fields = ("id", "tenant", "name", "is_active", *quota.RESOURCES, "quota")
        read_only_fields = fields
        list_serializer_class = QuotaListSerializer


_LIMIT_HELP = "null = unlimited, 0 = none."


def _int_limit(high: int) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=0, max_value=high, allow_null=True, required=False, help_text=_LIMIT_HELP)


class QuotaInput(InputSerializer):
    read_only_names = frozenset({"id", "tenant", "name", "is_active", "quota"})
    gpus = _int_limit(MAX_INT)
    gpu_memory_mb = _int_limit(MAX_BIGINT)
    cpus = serializers.FloatField(
        min_value=0, max_value=MAX_CPUS, allow_null=True, required=False, help_text=_LIMIT_HELP
    )
    memory_mb = _int_limit(MAX_BIGINT)
    replicas = _int_limit(MAX_INT)
    deployments = _int_limit(MAX_INT)


@extend_schema_view(
    list=extend_schema(summary="List every tenant's quota and usage (platform admin)"),
    retrieve=extend_schema(summary="Show a tenant's quota and usage (platform admin)"),
)
@extend_schema(tags=["platform"])
class PlatformQuotaViewSet(PlatformViewSet):
    """Quotas per tenant on GPUs, GPU memory, CPUs, memory, replicas and deployments, checked
    atomically whenever a deployment is created, changed, scaled or started. A limit below the
    current usage is allowed: what runs keeps running, and only requests for more are refused."""

    serializer_class = PlatformQuotaSerializer
    http_method_names = ["get", "patch", "head", "options"]
    lookup_field = "slug"
    lookup_value_regex = r"[-a-zA-Z0-9_]+"
    ordering_fields = ("slug", "name", "created_at")

    def select_list(self, filters: dict[str, Any]) -> QuerySet[Tenant]:
        return quota.quota_tenant_list(access=self.access)

    def select_list_for_schema(self) -> QuerySet[Tenant]:
        return Tenant.objects.none()

    def select_one(self, lookup: str) -> Tenant:
        return quota.quota_tenant_get(access=self.access, slug=lookup)

    @extend_schema(summary="Set some of a tenant's quotas (null = unlimited, 0 = none)", request=QuotaInput)
    def partial_update(self, request: Request, slug: str) -> Response:
        tenant = self.get_object()
        data = self.validated(QuotaInput)
        return self.output(tenant_quota_set(actor=self.actor, tenant=tenant, data=data))
