"""Viewsets of tenants, members and the caller's personal access tokens."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.core.exceptions import PermissionDenied
from controlplane.tenancy import selectors, services
from controlplane.tenancy.api import schema as _schema  # noqa: F401  (registers the auth scheme)
from controlplane.tenancy.api.base import ScopedViewSet
from controlplane.tenancy.api.serializers import (
    AccessTokenCreatedSerializer,
    AccessTokenCreateInput,
    AccessTokenRevokeInput,
    AccessTokenSerializer,
    MembershipCreateInput,
    MembershipSerializer,
    MembershipUpdateInput,
    TenantSerializer,
    TenantUpdateInput,
)
from controlplane.tenancy.choices import Perm, Role
from controlplane.tenancy.models import AccessToken, Membership, Tenant


@extend_schema_view(
    list=extend_schema(summary="List the tenants you belong to"),
    retrieve=extend_schema(summary="Show a tenant"),
)
@extend_schema(tags=["tenants"])
class TenantViewSet(ScopedViewSet):
    """Tenants you are a member of. Platform admins create tenants (``/api/v1/platform/tenants/``)."""

    serializer_class = TenantSerializer
    lookup_field = "slug"
    lookup_value_regex = r"[-a-zA-Z0-9_]+"
    ordering_fields = ("slug", "name", "created_at")
    list_perm = Perm.TENANT_VIEW
    token_admin_actions = frozenset({"partial_update", "destroy"})

    def select_list(self, filters: dict[str, Any]) -> QuerySet[Tenant]:
        return selectors.tenant_list(access=self.access)

    def select_one(self, lookup: str) -> Tenant:
        return selectors.tenant_get(access=self.access, slug=lookup)

    @extend_schema(summary="Change a tenant's name or limits (admin)", request=TenantUpdateInput)
    def partial_update(self, request: Request, slug: str) -> Response:
        tenant = self.get_object()
        self.access.require(tenant.pk, Perm.TENANT_CHANGE)
        data = self.validated(TenantUpdateInput)
        return self.output(services.tenant_update(actor=self.actor, tenant=tenant, data=data))

    @extend_schema(summary="Delete a tenant (owner; it must have no deployments)")
    def destroy(self, request: Request, slug: str) -> Response:
        tenant = self.get_object()
        self.access.require(tenant.pk, Perm.TENANT_DELETE)
        services.tenant_delete(actor=self.actor, tenant=tenant)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(summary="List members of your tenants"),
    retrieve=extend_schema(summary="Show a membership"),
)
@extend_schema(tags=["members"])
class MembershipViewSet(ScopedViewSet):
    """Who holds which role in a tenant. Nobody grants or changes a role above their own."""

    serializer_class = MembershipSerializer
    filter_fields: ClassVar[dict[str, serializers.Field]] = {
        "tenant": serializers.SlugField(max_length=50),
        "role": serializers.ChoiceField(choices=Role.choices),
    }
    ordering_fields = ("id", "role", "created_at")
    list_perm = Perm.MEMBER_VIEW
    token_admin_actions = frozenset({"create", "partial_update", "destroy"})

    def select_list(self, filters: dict[str, Any]) -> QuerySet[Membership]:
        return selectors.membership_list(access=self.access, filters=filters)

    def select_one(self, lookup: str) -> Membership:
        return selectors.membership_get(access=self.access, pk=int(lookup))

    @extend_schema(summary="Add a user to a tenant by username", request=MembershipCreateInput)
    def create(self, request: Request) -> Response:
        data = self.validated(MembershipCreateInput)
        tenant = self.tenant_for_write(data.get("tenant"), Perm.MEMBER_CHANGE)
        membership = services.membership_add(
            actor=self.actor, access=self.access, tenant=tenant, username=data["username"], role=data["role"]
        )
        return self.output(membership, status.HTTP_201_CREATED)

    @extend_schema(summary="Change a member's role", request=MembershipUpdateInput)
    def partial_update(self, request: Request, pk: str) -> Response:
        membership = self.get_object()
        self.access.require(membership.tenant_id, Perm.MEMBER_CHANGE)
        data = self.validated(MembershipUpdateInput)
        membership = services.membership_update(
            actor=self.actor, access=self.access, membership=membership, role=data["role"]
        )
        return self.output(membership)

    @extend_schema(summary="Remove a member from a tenant")
    def destroy(self, request: Request, pk: str) -> Response:
        membership = self.get_object()
        self.access.require(membership.tenant_id, Perm.MEMBER_CHANGE)
        services.membership_remove(actor=self.actor, access=self.access, membership=membership)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(summary="List your personal access tokens"),
    retrieve=extend_schema(summary="Show one of your personal access tokens"),
)
@extend_schema(tags=["tokens"])
class AccessTokenViewSet(ScopedViewSet):
    """Your personal access tokens for automation (``Authorization: Bearer hgp_...``).

    The secret is shown once, in the create response. A token cannot mint further tokens:
    create them from a signed-in session, so revoking a leaked token is always enough.
    """

    serializer_class = AccessTokenSerializer
    http_method_names = ["get", "post", "head", "options"]
    ordering_fields = ("id", "name", "created_at", "expires_at", "last_used_at")

    def select_list(self, filters: dict[str, Any]) -> QuerySet[AccessToken]:
        return selectors.access_token_list(user_id=self.request.user.pk)

    def select_one(self, lookup: str) -> AccessToken:
        return selectors.access_token_get(user_id=self.request.user.pk, pk=int(lookup))

    @extend_schema(
        summary="Create a personal access token (the secret is in the response, once)",
        request=AccessTokenCreateInput,
        responses={201: AccessTokenCreatedSerializer},
    )
    def create(self, request: Request) -> Response:
        if isinstance(request.auth, AccessToken):
            raise PermissionDenied("Create access tokens from a signed-in session, not with another token.")
        data = self.validated(AccessTokenCreateInput)
        token, secret = services.access_token_create(
            actor=self.actor,
            user=request.user,
            name=data["name"],
            scopes=data.get("scopes"),
            expires_at=data.get("expires_at"),
        )
        context = self.get_serializer_context() | {"token": secret}
        return Response(AccessTokenCreatedSerializer(token, context=context).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Revoke one of your tokens (it stops working at once), optionally with the API keys it created",
        request=AccessTokenRevokeInput,
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str) -> Response:
        token = self.get_object()
        data = self.validated(AccessTokenRevokeInput) if request.data else {}
        token = services.access_token_revoke(
            actor=self.actor, token=token, revoke_keys=bool(data.get("revoke_keys", False))
        )
        return self.output(token)
