"""Viewset of catalog models: register a directory, read its metadata, edit what is editable."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.catalog import selectors, services
from controlplane.catalog.api.serializers import (
    ModelCreateInput,
    ModelDetailSerializer,
    ModelSerializer,
    ModelUpdateInput,
    SourceCredentialCreateInput,
    SourceCredentialSerializer,
)
from controlplane.catalog.models import Model, SourceCredential
from controlplane.tenancy.api.base import ScopedViewSet
from controlplane.tenancy.choices import Perm


@extend_schema_view(
    list=extend_schema(summary="List catalog models"),
    retrieve=extend_schema(summary="Show a model with its memory estimate per dtype"),
)
@extend_schema(tags=["models"])
class ModelViewSet(ScopedViewSet):
    serializer_class = ModelSerializer
    filter_fields: ClassVar[dict[str, serializers.Field]] = {
        "tenant": serializers.SlugField(max_length=50),
        "name": serializers.CharField(max_length=100),
        "search": serializers.CharField(max_length=100, help_text="Part of the name."),
    }
    ordering_fields = ("id", "name", "created_at", "parameter_count", "size_bytes")
    list_perm = Perm.MODEL_VIEW

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return ModelSerializer if self.action == "list" else ModelDetailSerializer

    def select_list(self, filters: dict[str, Any]) -> QuerySet[Model]:
        # The tenant slug comes from the caller's Access (TenantSlugField): no tenant join.
        return selectors.model_list(access=self.access, filters=filters).select_related(None)

    def select_one(self, lookup: str) -> Model:
        return selectors.model_get(access=self.access, pk=int(lookup))

    @extend_schema(
        summary="Register a model directory (metadata is read from it)",
        request=ModelCreateInput,
        responses={201: ModelDetailSerializer},
    )
    def create(self, request: Request) -> Response:
        data = self.validated(ModelCreateInput)
        tenant = self.tenant_for_write(data.pop("tenant", None), Perm.MODEL_CHANGE)
        services.require_trust(self.access, data)
        model = services.model_register(actor=self.actor, tenant=tenant, **data)
        return self.output(model, status.HTTP_201_CREATED)

    @extend_schema(summary="Edit a model's description, dtypes or trust flags", request=ModelUpdateInput)
    def partial_update(self, request: Request, pk: str) -> Response:
        model = self.get_object()
        self.access.require(model.tenant_id, Perm.MODEL_CHANGE)
        data = self.validated(ModelUpdateInput)
        services.require_trust(self.access, data)
        return self.output(services.model_update(actor=self.actor, model=model, data=data))

    @extend_schema(summary="Remove a model from the catalog (no deployment may use it)")
    def destroy(self, request: Request, pk: str) -> Response:
        model = self.get_object()
        self.access.require(model.tenant_id, Perm.MODEL_CHANGE)
        services.model_delete(actor=self.actor, model=model)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(summary="List source credentials (secrets are never shown)"),
    retrieve=extend_schema(summary="Show a source credential (without its secret)"),
)
@extend_schema(tags=["models"])
class SourceCredentialViewSet(ScopedViewSet):
    """A tenant's S3 and hub credentials for model sources: the secret is write-only."""

    serializer_class = SourceCredentialSerializer
    filter_fields: ClassVar[dict[str, serializers.Field]] = {"tenant": serializers.SlugField(max_length=50)}
    ordering_fields = ("id", "name", "created_at")
    list_perm = Perm.MODEL_VIEW

    def select_list(self, filters: dict[str, Any]) -> QuerySet[SourceCredential]:
        return selectors.source_credential_list(access=self.access, filters=filters)

    def select_one(self, lookup: str) -> SourceCredential:
        return selectors.source_credential_get(access=self.access, pk=int(lookup))

    @extend_schema(
        summary="Store a source credential",
        request=SourceCredentialCreateInput,
        responses={201: SourceCredentialSerializer},
    )
    def create(self, request: Request) -> Response:
        data = self.validated(SourceCredentialCreateInput)
        tenant = self.tenant_for_write(data.pop("tenant", None), Perm.MODEL_CHANGE)
        credential = services.source_credential_create(actor=self.actor, tenant=tenant, **data)
        return self.output(credential, status.HTTP_201_CREATED)

    @extend_schema(summary="Delete a source credential (no model may use it)")
    def destroy(self, request: Request, pk: str) -> Response:
        credential = self.get_object()
        self.access.require(credential.tenant_id, Perm.MODEL_CHANGE)
        services.source_credential_delete(actor=self.actor, credential=credential)
        return Response(status=status.HTTP_204_NO_CONTENT)
