"""Viewset of gateway API keys: create (secret shown once), list, show, revoke."""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth import get_user_model
from django.db.models import F, QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.keys import selectors, services
from controlplane.keys.api.serializers import ApiKeyCreatedSerializer, ApiKeyCreateInput, ApiKeySerializer
from controlplane.keys.models import ApiKey
from controlplane.tenancy.api.base import ScopedViewSet
from controlplane.tenancy.choices import Perm


@extend_schema_view(
    list=extend_schema(summary="List API keys (never their secrets)"),
    retrieve=extend_schema(summary="Show an API key (never its secret)"),
)
@extend_schema(tags=["keys"])
class ApiKeyViewSet(ScopedViewSet):
    """Per-tenant keys for the OpenAI-compatible gateway. Keys are revoked, never edited or
    deleted, so usage history keeps pointing at them."""

    serializer_class = ApiKeySerializer
    http_method_names = ["get", "post", "head", "options"]
    filter_fields: ClassVar[dict[str, serializers.Field]] = {
        "tenant": serializers.SlugField(max_length=50),
        "active": serializers.ChoiceField(choices=["true", "false", "1", "0"], help_text="Only (in)active keys."),
    }
    ordering_fields = ("id", "name", "created_at", "expires_at", "last_used_at")
    list_perm = Perm.APIKEY_VIEW
    # A key is a credential of its own: minting one with a token needs the token's admin scope.
    token_admin_actions = frozenset({"create"})

    def select_list(self, filters: dict[str, Any]) -> QuerySet[ApiKey]:
        # Only the creator's username, not the whole user row; the tenant slug comes from the
        # caller's Access (TenantSlugField): no joins of whole rows for a list page.
        username = f"created_by__{get_user_model().USERNAME_FIELD}"
        return (
            selectors.api_key_list(access=self.access, filters=filters)
            .select_related(None)
            .annotate(created_by_username=F(username))
        )

    def select_one(self, lookup: str) -> ApiKey:
        return selectors.api_key_get(access=self.access, pk=int(lookup))

    @extend_schema(
        summary="Create an API key (the secret is in the response, once)",
        request=ApiKeyCreateInput,
        responses={201: ApiKeyCreatedSerializer},
    )
    def create(self, request: Request) -> Response:
        data = self.validated(ApiKeyCreateInput)
        tenant = self.tenant_for_write(data.pop("tenant", None), Perm.APIKEY_CHANGE)
        key, token = services.api_key_create(actor=self.actor, tenant=tenant, data=data)
        context = self.get_serializer_context() | {"key": token}
        return Response(ApiKeyCreatedSerializer(key, context=context).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Revoke a key (gateways stop accepting it at once)", request=None)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str) -> Response:
        key = self.get_object()
        self.access.require(key.tenant_id, Perm.APIKEY_CHANGE)
        return self.output(services.api_key_revoke(actor=self.actor, key=key))
