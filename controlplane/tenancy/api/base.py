"""Base viewset of every API endpoint: access, actor, typed filters, strict bodies, numeric ids.

It computes the caller's ``Access`` once per request (cached on the request), builds the
``Actor`` for services, turns whitelisted query parameters into typed ``filters`` for
selectors, and resolves the tenant a create goes to.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from django.db.models import QuerySet
from rest_framework import serializers, status, viewsets
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.serializer_helpers import ReturnList

from controlplane.core.api import QueryFilterBackend, StableOrderingFilter, StrictJSONParser, lean_rows
from controlplane.core.context import Actor, client_ip
from controlplane.core.exceptions import PermissionDenied, ValidationFailed
from controlplane.core.schema import ApiSchema
from controlplane.tenancy.access import Access, access_for
from controlplane.tenancy.choices import Perm, TokenScope
from controlplane.tenancy.models import AccessToken, Tenant


class _Row:
    """A page row read with ``.values()``: its columns and annotations as attributes."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__ = values


def column_values(queryset: QuerySet[Any]) -> QuerySet[Any]:
    """``queryset`` as dicts of every concrete column (by attribute name) and annotation."""
    names = [field.attname for field in queryset.model._meta.concrete_fields]
    return queryset.values(*names, *queryset.query.annotations)


def get_access(request: Any) -> Access:
    """The caller's roles, loaded once per request and cached on the underlying HttpRequest."""
    raw = getattr(request, "_request", request)
    access = getattr(raw, "_hangar_access", None)
    if access is None:
        access = access_for(getattr(request, "user", None))
        raw._hangar_access = access
    return access


def actor_for(request: Any, *, via: str = "api") -> Actor:
    auth = getattr(request, "auth", None)
    token_id = auth.pk if isinstance(auth, AccessToken) else None
    return Actor(user=request.user, source_ip=client_ip(request.META), via=via, token_id=token_id)


class ScopedViewSet(viewsets.GenericViewSet):
    """Base of every API viewset: access, actor, typed filters, strict bodies, numeric ids.

    Subclasses implement ``select_list`` (a selector call) and ``select_one`` (the ``*_get``
    selector, which raises NotFound for objects of other tenants).
    """

    schema = ApiSchema()
    parser_classes = [StrictJSONParser]
    filter_backends = [QueryFilterBackend, StableOrderingFilter]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    lookup_value_regex = r"[0-9]+"
    # query parameter -> serializer field that parses it; passed to the selector as ``filters``
    filter_fields: ClassVar[dict[str, serializers.Field]] = {}
    filter_actions: ClassVar[tuple[str, ...]] = ("list",)
    ordering_fields: ClassVar[tuple[str, ...]] = ()
    # Listing with no tenant granting this is a 403 (instead of a silently empty page).
    list_perm: ClassVar[Perm | None] = None
    # How a list page's rows are serialized (same output as ``serializer.data``, cheaper);
    # ``None`` uses ``serializer.data`` (bench/list_pages.py compares the two).
    list_rows: ClassVar[Any] = staticmethod(lean_rows)
    # Lean lists of wide rows may skip building model instances: the page is read with
    # ``.values()`` (every column and annotation) into plain attribute holders. Only for
    # serializers that read columns and annotations, never model methods or relations.
    list_from_values: ClassVar[bool] = False
    # Actions a personal access token needs the ``admin`` scope for (other writes need ``write``).
    token_admin_actions: ClassVar[frozenset[str]] = frozenset()

    @property
    def access(self) -> Access:
        return get_access(self.request)

    def required_token_scope(self, request: Request) -> str:
        """The scope a personal access token needs here (``TokenScopePermission`` checks it)."""
        if request.method in SAFE_METHODS:
            return TokenScope.READ
        return TokenScope.ADMIN if self.action in self.token_admin_actions else TokenScope.WRITE

    @property
    def actor(self) -> Actor:
        return actor_for(self.request)

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        if getattr(self, "request", None) is not None:
            context["access"] = self.access
        return context

    def get_filters(self) -> dict[str, Any]:
        params = self.request.query_params
        # An empty value (``?until=``) is parsed like any other: a 400 unless the field allows it.
        present = {name: params.get(name) for name in self.filter_fields if params.get(name) is not None}
        if not present:
            return {}
        serializer_class = type(
            "Filters", (serializers.Serializer,), {k: copy.deepcopy(v) for k, v in self.filter_fields.items()}
        )
        serializer = serializer_class(data=present, partial=True)
        serializer.is_valid(raise_exception=True)
        return {k: v for k, v in serializer.validated_data.items() if k in present}

    def select_list(self, filters: dict[str, Any]) -> QuerySet[Any]:
        raise NotImplementedError

    def select_one(self, lookup: str) -> Any:
        raise NotImplementedError

    def get_queryset(self) -> QuerySet[Any]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request user
            return self.select_list_for_schema()
        self.check_list_perm()
        return self.select_list(self.get_filters())

    def check_list_perm(self) -> None:
        perm = self.list_perm
        if perm is not None and self.access.roles and not self.access.tenant_ids(perm):
            raise PermissionDenied(f"None of your roles allows this ({perm.value}).")

    def select_list_for_schema(self) -> QuerySet[Any]:
        return self.select_list({})

    def get_object(self) -> Any:
        return self.select_one(str(self.kwargs[self.lookup_url_kwarg or self.lookup_field]))

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        rows = self.list_rows
        from_values = self.list_from_values and rows is not None
        page = self.paginate_queryset(column_values(queryset) if from_values else queryset)
        if from_values and page is not None:
            page = [_Row(values) for values in page]
        serializer = self.get_serializer(page if page is not None else queryset, many=True)
        data = serializer.data if rows is None else ReturnList(rows(serializer), serializer=serializer)
        if page is not None:
            return self.get_paginated_response(data)
        return Response(data)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    # -- helpers for writes

    def validated(self, serializer_class: type[serializers.Serializer], **kwargs: Any) -> dict[str, Any]:
        serializer = serializer_class(data=self.request.data, context=self.get_serializer_context(), **kwargs)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def output(self, obj: Any, status_code: int = status.HTTP_200_OK, **kwargs: Any) -> Response:
        return Response(self.get_serializer(obj, **kwargs).data, status=status_code)

    def tenant_for_write(self, slug: str | None, perm: Perm) -> Tenant:
        """The tenant a create goes to: the given slug (a 400 if the caller is not in it), or
        the caller's only tenant where ``perm`` is granted."""
        access = self.access
        if slug:
            tenant_id = next((tid for tid, s in access.slugs.items() if s == slug), None)
            if tenant_id is None:
                raise ValidationFailed(
                    "Unknown tenant.", field_errors={"tenant": [f"You are not a member of a tenant {slug!r}."]}
                )
        else:
            tenant_id = access.default_tenant_id(perm)
        access.require(tenant_id, perm)
        return Tenant.objects.get(pk=tenant_id)


class PlatformViewSet(ScopedViewSet):
    """Base of the platform endpoints (``/api/v1/platform/...``): targets, grants, quotas,
    tenants and users. Only platform admins reach them; for everyone else they do not exist
    (404, the same answer as an unknown URL), whatever their tenant roles."""

    def required_token_scope(self, request: Request) -> str:
        # Targets, credentials, tenants, users and quotas: every platform write needs ``admin``.
        return TokenScope.READ if request.method in SAFE_METHODS else TokenScope.ADMIN

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authentication first: anonymous stays 401/403
        if getattr(self, "swagger_fake_view", False):
            return
        method = (request.method or "").lower()
        if method not in self.http_method_names or getattr(self, method, None) is None:
            return  # DRF answers 405 next, as for every endpoint (the route itself is public)
        get_access(request).require_platform_admin()
