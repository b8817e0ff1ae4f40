"""Viewset of metered usage: rows per key, model and minute, and totals per key."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.core.api import QueryFilterBackend
from controlplane.core.exceptions import NotFound
from controlplane.tenancy.api.base import ScopedViewSet
from controlplane.tenancy.choices import Perm
from controlplane.usage import selectors
from controlplane.usage.api.serializers import UsageRecordSerializer, UsageTotalsSerializer
from controlplane.usage.models import UsageRecord


@extend_schema_view(
    list=extend_schema(summary="List usage per key, model and minute (newest first)"),
    retrieve=extend_schema(summary="Show one usage row"),
)
@extend_schema(tags=["usage"])
class UsageViewSet(ScopedViewSet):
    serializer_class = UsageRecordSerializer
    http_method_names = ["get", "head", "options"]
    filter_fields: ClassVar[dict[str, serializers.Field]] = {
        "tenant": serializers.SlugField(max_length=50),
        "api_key": serializers.IntegerField(min_value=1, max_value=2**63 - 1, help_text="API key id."),
        "model": serializers.CharField(max_length=100, help_text="Served model name."),
        "since": serializers.DateTimeField(help_text="From this minute (inclusive)."),
        "until": serializers.DateTimeField(help_text="Up to this minute (exclusive)."),
    }
    filter_actions = ("list", "totals")
    ordering_fields = ("id", "minute", "requests", "prompt_tokens", "completion_tokens", "errors")
    list_perm = Perm.USAGE_VIEW

    def select_list(self, filters: dict[str, Any]) -> QuerySet[UsageRecord]:
        return selectors.usage_list(access=self.access, filters=filters)

    def select_one(self, lookup: str) -> UsageRecord:
        record = self.select_list({}).filter(pk=int(lookup)).first()
        if record is None:
            raise NotFound("Usage record not found.")
        return record

    @extend_schema(summary="Totals per API key over the filtered range", responses=UsageTotalsSerializer(many=True))
    @action(detail=False, methods=["get"], serializer_class=UsageTotalsSerializer, filter_backends=[QueryFilterBackend])
    def totals(self, request: Request) -> Response:
        self.check_list_perm()
        rows = selectors.usage_totals_by_key(access=self.access, filters=self.get_filters())
        page = self.paginate_queryset(rows)
        serializer = UsageTotalsSerializer(page if page is not None else rows, many=True)
        if page is not None:
            return self.get_paginated_response(serializer.data)
        return Response(serializer.data)
