"""Platform endpoints for tenants and users (``/api/v1/platform/tenants|users/``).

Only platform admins reach them (``PlatformViewSet``: 404 for everyone else). Passwords appear
once, in the response that created them, with ``Cache-Control: no-store``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.core.api import InputSerializer
from controlplane.tenancy import selectors, services
from controlplane.tenancy.api.base import PlatformViewSet
from controlplane.tenancy.api.serializers import MAX_BUDGET, MAX_BURST_PERCENT, MAX_LIMIT
from controlplane.tenancy.choices import Role
from controlplane.tenancy.models import Tenant

PLATFORM_TENANT_FIELDS = (
    "id",
    "slug",
    "name",
    "is_active",
    "member_count",
    "rpm_limit",
    "tpm_limit",
    "monthly_token_budget",
    "burst_percent",
    "created_at",
    "updated_at",
)


class PlatformTenantSerializer(serializers.ModelSerializer):
    member_count = serializers.IntegerField(read_only=True, default=0)

    class Meta:
        model = Tenant
        fields = PLATFORM_TENANT_FIELDS
        read_only_fields = PLATFORM_TENANT_FIELDS


class PlatformTenantLimitsInput(InputSerializer):
    rpm_limit = serializers.IntegerField(min_value=0, max_value=MAX_LIMIT, required=False)
    tpm_limit = serializers.IntegerField(min_value=0, max_value=MAX_LIMIT, required=False)
    monthly_token_budget = serializers.IntegerField(min_value=0, max_value=MAX_BUDGET, required=False)
    burst_percent = serializers.IntegerField(
        min_value=0,
        max_value=MAX_BURST_PERCENT,
        required=False,
        help_text="Explicit burst allowance of the tenant-wide RPM/TPM limits, % of the limit (default 0).",
    )


class PlatformTenantCreateInput(PlatformTenantLimitsInput):
    name = serializers.CharField(max_length=100)
    slug = serializers.CharField(
        max_length=50, required=False, help_text="Derived from the name if omitted; may not start with '_'."
    )
    owner = serializers.CharField(
        max_length=150, required=False, allow_blank=True, help_text="Username of the tenant's first owner."
    )


class PlatformTenantUpdateInput(PlatformTenantLimitsInput):
    read_only_names = frozenset(
        set(PLATFORM_TENANT_FIELDS) - {"name", "rpm_limit", "tpm_limit", "monthly_token_budget", "burst_percent"}
    )
    name = serializers.CharField(max_length=100, required=False)


class MembershipBriefSerializer(serializers.Serializer):
    tenant = serializers.CharField(source="tenant.slug")
    role = serializers.ChoiceField(choices=Role.choices)


class PlatformUserSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(read_only=True)
    email = serializers.CharField(read_only=True)
    is_active = serializers.BooleanField(read_only=True)
    is_platform_admin = serializers.SerializerMethodField()
    is_superuser = serializers.BooleanField(read_only=True)
    memberships = MembershipBriefSerializer(many=True, read_only=True)
    date_joined = serializers.DateTimeField(read_only=True)
    last_login = serializers.DateTimeField(read_only=True, allow_null=True)

    def get_is_platform_admin(self, obj: Any) -> bool:
        return selectors.platform_admin_flag(obj)


class PlatformUserPasswordSerializer(PlatformUserSerializer):
    password = serializers.SerializerMethodField(
        help_text="The generated password, shown only in this response; empty if you chose one."
    )

    def get_password(self, obj: Any) -> str:
        return str(self.context.get("password", ""))


class PlatformUserCreateInput(InputSerializer):
    username = serializers.CharField(max_length=150)
    email = serializers.CharField(max_length=254, required=False, allow_blank=True, default="")
    password = serializers.CharField(
        max_length=128,
        required=False,
        allow_blank=True,
        write_only=True,
        style={"input_type": "password"},
        help_text="Omit to have one generated and returned once.",
    )


class PlatformAdminInput(InputSerializer):
    platform_admin = serializers.BooleanField(help_text="Grant (true) or remove (false) the platform admin right.")


def _no_store(response: Response) -> Response:
    response["Cache-Control"] = "no-store"
    return response


@extend_schema_view(
    list=extend_schema(summary="List every tenant, active or not (platform admin)"),
    retrieve=extend_schema(summary="Show a tenant (platform admin)"),
)
@extend_schema(tags=["platform"])
class PlatformTenantViewSet(PlatformViewSet):
    """Every tenant of the installation. Deactivating one switches off its members' access and
    its API keys at the gateway, keeping every row; activating brings it back. Quotas are set
    under ``/api/v1/platform/quotas/``."""

    serializer_class = PlatformTenantSerializer
    http_method_names = ["get", "post", "patch", "head", "options"]
    filter_fields: ClassVar[dict[str, serializers.Field]] = {
        "is_active": serializers.BooleanField(),
        "search": serializers.CharField(max_length=100, help_text="Part of the slug or name."),
    }
    ordering_fields = ("id", "slug", "name", "created_at")

    def select_list(self, filters: dict[str, Any]) -> QuerySet[Tenant]:
        return selectors.platform_tenant_list(access=self.access, filters=filters)

    def select_list_for_schema(self) -> QuerySet[Tenant]:
        return Tenant.objects.none()

    def select_one(self, lookup: str) -> Tenant:
        return selectors.platform_tenant_get(access=self.access, pk=int(lookup))

    @extend_schema(summary="Create a tenant, optionally with its first owner", request=PlatformTenantCreateInput)
    def create(self, request: Request) -> Response:
        data = self.validated(PlatformTenantCreateInput)
        limits = {k: data[k] for k in ("rpm_limit", "tpm_limit", "monthly_token_budget", "burst_percent") if k in data}
        tenant = services.platform_tenant_create(
            actor=self.actor,
            name=data["name"],
            slug=data.get("slug", ""),
            owner_username=data.get("owner", ""),
            data=limits,
        )
        return self.output(self.select_one(str(tenant.pk)), status.HTTP_201_CREATED)

    @extend_schema(summary="Change a tenant's name or gateway limits", request=PlatformTenantUpdateInput)
    def partial_update(self, request: Request, pk: str) -> Response:
        tenant = self.get_object()
        data = self.validated(PlatformTenantUpdateInput)
        services.tenant_update(actor=self.actor, tenant=tenant, data=data)
        return self.output(self.select_one(pk))

    @extend_schema(summary="Deactivate a tenant: members lose access, keys are refused", request=None)
    @action(detail=True, methods=["post"])
    def deactivate(self, request: Request, pk: str) -> Response:
        services.tenant_deactivate(actor=self.actor, tenant=self.get_object())
        return self.output(self.select_one(pk))

    @extend_schema(summary="Activate a tenant again", request=None)
    @action(detail=True, methods=["post"])
    def activate(self, request: Request, pk: str) -> Response:
        services.tenant_activate(actor=self.actor, tenant=self.get_object())
        return self.output(self.select_one(pk))


@extend_schema_view(
    list=extend_schema(summary="List every user (platform admin)"),
    retrieve=extend_schema(summary="Show a user (platform admin)"),
)
@extend_schema(tags=["platform"])
class PlatformUserViewSet(PlatformViewSet):
    """Every user of the installation: create, deactivate, reset passwords, grant the platform
    admin right. Nobody deactivates or demotes themselves; only superusers change superusers."""

    serializer_class = PlatformUserSerializer
    http_method_names = ["get", "post", "head", "options"]
    filter_fields: ClassVar[dict[str, serializers.Field]] = {
        "is_active": serializers.BooleanField(),
        "search": serializers.CharField(max_length=100, help_text="Part of the username or email."),
    }
    ordering_fields = ("id", "username", "date_joined", "last_login")

    def select_list(self, filters: dict[str, Any]) -> QuerySet[Any]:
        return selectors.platform_user_list(access=self.access, filters=filters)

    def select_list_for_schema(self) -> QuerySet[Any]:
        from django.contrib.auth import get_user_model

        return get_user_model().objects.none()

    def select_one(self, lookup: str) -> Any:
        return selectors.platform_user_get(access=self.access, pk=int(lookup))

    def _with_password(self, user: Any, password: str, status_code: int = status.HTTP_200_OK) -> Response:
        context = self.get_serializer_context() | {"password": password}
        user = self.select_one(str(user.pk))
        return _no_store(Response(PlatformUserPasswordSerializer(user, context=context).data, status=status_code))

    @extend_schema(
        summary="Create a user (a generated password is in the response, once)",
        request=PlatformUserCreateInput,
        responses={201: PlatformUserPasswordSerializer},
    )
    def create(self, request: Request) -> Response:
        data = self.validated(PlatformUserCreateInput)
        user, shown = services.user_create(
            actor=self.actor, username=data["username"], email=data.get("email", ""), password=data.get("password")
        )
        return self._with_password(user, shown, status.HTTP_201_CREATED)

    @extend_schema(summary="Deactivate a user: sessions and access tokens stop working", request=None)
    @action(detail=True, methods=["post"])
    def deactivate(self, request: Request, pk: str) -> Response:
        services.user_deactivate(actor=self.actor, user=self.get_object())
        return self.output(self.select_one(pk))

    @extend_schema(summary="Activate a user again", request=None)
    @action(detail=True, methods=["post"])
    def activate(self, request: Request, pk: str) -> Response:
        services.user_activate(actor=self.actor, user=self.get_object())
        return self.output(self.select_one(pk))

    @extend_schema(
        summary="Give a user a new generated password (in the response, once)",
        request=None,
        responses={200: PlatformUserPasswordSerializer},
    )
    @action(detail=True, methods=["post"], url_path="reset-password")
    def reset_password(self, request: Request, pk: str) -> Response:
        user = self.get_object()
        password = services.user_reset_password(actor=self.actor, user=user)
        return self._with_password(user, password)

    @extend_schema(summary="Grant or remove the platform admin right", request=PlatformAdminInput)
    @action(detail=True, methods=["post"], url_path="platform-admin")
    def platform_admin(self, request: Request, pk: str) -> Response:
        user = self.get_object()
        data = self.validated(PlatformAdminInput)
        services.platform_admin_set(actor=self.actor, user=user, value=data["platform_admin"])
        return self.output(self.select_one(pk))
