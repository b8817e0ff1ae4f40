"""Platform endpoints for targets and grants (``/api/v1/platform/targets/``, ``.../grants/``).

Only platform admins reach them (``PlatformViewSet``: a 404 for everyone else). Credentials are
write-only: a target shows ``has_tls``, ``has_ssh_key`` and ``has_kubeconfig`` instead.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.core.exceptions import ValidationFailed
from controlplane.deployments import selectors, services
from controlplane.deployments.api.serializers import (
    GrantCreateInput,
    GrantSerializer,
    PlatformTargetCreateInput,
    PlatformTargetSerializer,
    PlatformTargetUpdateInput,
)
from controlplane.deployments.choices import TargetKind
from controlplane.deployments.models import Target, TargetGrant
from controlplane.tenancy.api.base import PlatformViewSet

TARGET_ID = serializers.IntegerField(min_value=1, max_value=2**63 - 1, help_text="Target id.")


@extend_schema_view(list=extend_schema(summary="List every target"), retrieve=extend_schema(summary="Show a target"))
@extend_schema(tags=["platform"])
class PlatformTargetViewSet(PlatformViewSet):
    """Targets with their connection settings: local processes, a Docker host or a Kubernetes
    cluster. Credentials (TLS files, SSH key, kubeconfig) are uploaded as text, stored encrypted
    and never shown again."""

    serializer_class = PlatformTargetSerializer
    filter_fields: ClassVar[dict[str, serializers.Field]] = {
        "kind": serializers.ChoiceField(choices=TargetKind.choices),
        "name": serializers.CharField(max_length=100),
        "tenant": serializers.SlugField(max_length=50, help_text="Targets granted to this tenant."),
    }
    ordering_fields = ("id", "name", "kind", "created_at", "health_checked_at")

    def select_list(self, filters: dict[str, Any]) -> QuerySet[Target]:
        return selectors.platform_target_list(access=self.access, filters=filters)

    def select_one(self, lookup: str) -> Target:
        return selectors.platform_target_get(access=self.access, pk=int(lookup))

    @extend_schema(summary="Add a target (a health check is queued)", request=PlatformTargetCreateInput)
    def create(self, request: Request) -> Response:
        data = self.validated(PlatformTargetCreateInput)
        return self.output(services.target_create(actor=self.actor, data=data), status.HTTP_201_CREATED)

    @extend_schema(
        summary="Change a target's settings or credentials (kind is fixed)", request=PlatformTargetUpdateInput
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        target = self.get_object()
        data = self.validated(PlatformTargetUpdateInput)
        return self.output(services.target_update(actor=self.actor, target=target, data=data))

    @extend_schema(summary="Remove a target and its grants (no deployment may use it)")
    def destroy(self, request: Request, pk: str) -> Response:
        services.target_delete(actor=self.actor, target=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Queue a health check; the result appears in `health` shortly",
        request=None,
        responses={202: PlatformTargetSerializer},
    )
    @action(detail=True, methods=["post"])
    def check(self, request: Request, pk: str) -> Response:
        target = self.get_object()
        services.target_check(actor=self.actor, target=target)
        return self.output(target, status.HTTP_202_ACCEPTED)


@extend_schema_view(list=extend_schema(summary="List grants"), retrieve=extend_schema(summary="Show a grant"))
@extend_schema(tags=["platform"])
class PlatformGrantViewSet(PlatformViewSet):
    """Which tenant may deploy onto which target (and, on Kubernetes, into which namespace).
    A grant is created or revoked, never edited; revoking is refused while the tenant has
    deployments on the target."""

    serializer_class = GrantSerializer
    http_method_names = ["get", "post", "delete", "head", "options"]
    filter_fields: ClassVar[dict[str, serializers.Field]] = {
        "target": TARGET_ID,
        "tenant": serializers.SlugField(max_length=50),
    }
    ordering_fields = ("id", "created_at")

    def select_list(self, filters: dict[str, Any]) -> QuerySet[TargetGrant]:
        # GrantSerializer shows the target's name and the tenant's slug: load those columns of
        # the joined rows, not every JSON column of each target.
        shown = ("id", "target_id", "tenant_id", "namespace", "created_at", "target__name", "tenant__slug")
        return selectors.platform_grant_list(access=self.access, filters=filters).only(*shown)

    def select_one(self, lookup: str) -> TargetGrant:
        return selectors.platform_grant_get(access=self.access, pk=int(lookup))

    @extend_schema(summary="Grant a target to a tenant", request=GrantCreateInput, responses={201: GrantSerializer})
    def create(self, request: Request) -> Response:
        data = self.validated(GrantCreateInput)
        errors: dict[str, list[str]] = {}
        target = selectors.platform_target_list(access=self.access).filter(pk=data["target"]).first()
        if target is None:
            errors["target"] = [f"No target with id {data['target']}."]
        tenant = selectors.platform_tenant_by_slug(access=self.access, slug=data["tenant"])
        if tenant is None:
            errors["tenant"] = [f"No tenant {data['tenant']!r}."]
        if errors or target is None or tenant is None:
            raise ValidationFailed("Invalid grant.", field_errors=errors)
        grant = services.target_grant(
            actor=self.actor, target=target, tenant=tenant, namespace=data.get("namespace", "")
        )
        return self.output(grant, status.HTTP_201_CREATED)

    @extend_schema(summary="Revoke a grant (refused while the tenant has deployments on the target)")
    def destroy(self, request: Request, pk: str) -> Response:
        services.target_revoke(actor=self.actor, grant=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
