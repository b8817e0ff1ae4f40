"""REST API plumbing shared by every app: pagination, filtering, parsing, errors in one place.

The viewset base class lives in ``controlplane.tenancy.api.base``: this module is imported by
DRF's settings (filter backends, exception handler), so it must not import DRF's views.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
from collections.abc import Mapping
from typing import Any, ClassVar

from django.core.exceptions import RequestDataTooBig
from django.db import DataError, IntegrityError
from django.http import Http404
from drf_spectacular.plumbing import build_basic_type, build_parameter_type
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import ISO_8601, exceptions, serializers, status
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser
from rest_framework.relations import PKOnlyObject
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from controlplane.core.exceptions import DomainError

logger = logging.getLogger(__name__)

# Postgres offsets are bigint; anything near that is a mistake, not a page.
MAX_OFFSET = 10**9
# The schema pattern of strings that may not contain NUL (refused by DRF and by StrictJSONParser).
NO_NUL = "^[^\\x00]*$"


class Pagination(LimitOffsetPagination):
    """``?limit=`` (1 or more; above ``max_limit`` means ``max_limit``) and ``?offset=`` (0 or
    more): anything else is a 400 naming the parameter, not a silently different page."""

    default_limit = 50
    max_limit = 500

    def get_limit(self, request: Request) -> int:
        value = _paging_int(request, self.limit_query_param, minimum=1)
        return self.default_limit if value is None else min(value, self.max_limit)

    def get_offset(self, request: Request) -> int:
        value = _paging_int(request, self.offset_query_param, minimum=0)
        return 0 if value is None else min(value, MAX_OFFSET)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        limit_help = (
            f"Rows per page, 1 to {self.max_limit} (larger values mean {self.max_limit}); default {self.default_limit}."
        )
        return [
            {
                "name": self.limit_query_param,
                "required": False,
                "in": "query",
                "description": limit_help,
                "schema": {"type": "integer", "minimum": 1},
            },
            {
                "name": self.offset_query_param,
                "required": False,
                "in": "query",
                "description": "Rows to skip before the page starts; default 0.",
                "schema": {"type": "integer", "minimum": 0},
            },
        ]


def _paging_int(request: Request, name: str, *, minimum: int) -> int | None:
    """The query parameter ``name`` as an integer of at least ``minimum``; ``None`` when absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    text = raw
    if not (text.isascii() and text.isdigit()) or len(text) > 100:
        raise exceptions.ValidationError({name: ["A valid integer is required."]})
    value = int(text)
    if value < minimum:
        raise exceptions.ValidationError({name: [f"Ensure this value is greater than or equal to {minimum}."]})
    return value


class QueryFilterBackend:
    """Pass whitelisted query parameters to the viewset's selector as ``filters``.

    Viewsets declare ``filter_fields`` (name -> serializer field that parses the value); the
    selector does the filtering (tenant scope first). This backend only exists so the
    parameters appear in the OpenAPI schema.
    """

    def filter_queryset(self, request: Request, queryset: Any, view: Any) -> Any:
        return queryset

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        if getattr(view, "action", None) not in (None, *getattr(view, "filter_actions", ("list",))):
            return []
        fields = getattr(view, "filter_fields", {})
        params = []
        for name in fields:
            field = fields[name] if isinstance(fields, Mapping) else None
            params.append(
                build_parameter_type(
                    name=name,
                    schema=_query_schema(field),
                    location="query",
                    description=str(getattr(field, "help_text", "") or ""),
                )
            )
        return params


def _query_schema(field: serializers.Field | None) -> dict[str, Any]:
    """The schema of a filter parameter: its type, enum and bounds, as its field parses it."""
    if isinstance(field, serializers.ChoiceField):
        return {"type": "string", "enum": [str(c) for c in field.choices]}
    if isinstance(field, serializers.IntegerField):
        schema = build_basic_type(OpenApiTypes.INT) or {}
        return _bounded(schema, "minimum", field.min_value, "maximum", field.max_value)
    if isinstance(field, serializers.DateTimeField):
        return build_basic_type(OpenApiTypes.DATETIME) or {}
    if isinstance(field, serializers.BooleanField):
        return build_basic_type(OpenApiTypes.BOOL) or {}
    schema = build_basic_type(OpenApiTypes.STR) or {}
    if isinstance(field, serializers.CharField):
        schema["pattern"] = NO_NUL  # DRF refuses NUL in every CharField
        schema = _bounded(
            schema, "minLength", field.min_length or (0 if field.allow_blank else 1), "maxLength", field.max_length
        )
        if isinstance(field, serializers.SlugField):
            schema["pattern"] = "^[-a-zA-Z0-9_]+$"
    return schema


def _bounded(schema: dict[str, Any], low_key: str, low: Any, high_key: str, high: Any) -> dict[str, Any]:
    schema = dict(schema)
    if low is not None:
        schema[low_key] = low
    if high is not None:
        schema[high_key] = high
    return schema


class StableOrderingFilter(OrderingFilter):
    """``?ordering=`` over the view's explicit ``ordering_fields``, with ``id`` as a tie-breaker
    so pages never repeat or skip rows when the chosen column has duplicates."""

    def get_ordering(self, request: Request, queryset: Any, view: Any) -> Any:
        ordering = super().get_ordering(request, queryset, view)
        if not ordering or self.get_query_param(request) is None:
            return ordering
        ordering = list(ordering)
        if not any(term.lstrip("-") in {"id", "pk"} for term in ordering):
            ordering.append("id")
        return ordering

    def get_query_param(self, request: Request) -> str | None:
        params = request.query_params.getlist(self.ordering_param)
        return ",".join(params) if params else None


def _unstorable(text: str) -> bool:
    """NUL and unpaired surrogates cannot be stored in PostgreSQL text or jsonb."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _find_unstorable(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _unstorable(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class StrictJSONParser(JSONParser):
    """JSON bodies only; refuse what would otherwise surface as a 500 deeper down.

    Deeply nested documents (RecursionError in the decoder) and strings that PostgreSQL cannot
    store (NUL, unpaired surrogates) are answered with a 400 here.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the document is nested too deeply.") from None
        if _find_unstorable(data):
            raise exceptions.ParseError("JSON parse error - strings must not contain NUL or unpaired surrogates.")
        return data


# ----------------------------------------------------------------------------- serializers


@extend_schema_field(OpenApiTypes.STR)
class TenantSlugField(serializers.Field):
    """The owning tenant's slug, read from the request's ``Access`` (no join) when possible."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["read_only"] = True
        kwargs["source"] = "*"
        kwargs.setdefault("help_text", "Slug of the tenant that owns this object.")
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> str | None:
        tenant_id = getattr(value, "tenant_id", None)
        if tenant_id is None:
            return None
        # The request's tenancy Access, if any (core knows only that it maps tenant ids to slugs).
        slugs = getattr(self.context.get("access"), "slugs", None)
        slug = slugs.get(tenant_id) if isinstance(slugs, dict) else None
        return str(slug) if slug is not None else str(value.tenant.slug)


class InputSerializer(serializers.Serializer):
    """Request body of a write. Unknown fields are refused, not silently dropped, so a typo
    (``"replica": 3``) is a 400 naming the field instead of a write that did nothing.

    ``read_only_names`` lists fields the resource shows but a client may not set, so the error
    can say why.
    """

    read_only_names: ClassVar[frozenset[str]] = frozenset()

    def to_internal_value(self, data: Any) -> Any:
        errors: dict[str, Any] = self._unknown_fields(data) if isinstance(data, Mapping) else {}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not isinstance(exc.detail, dict):
                raise
            errors = {**exc.detail, **errors}
            value = None
        if errors:
            raise serializers.ValidationError(errors)
        return value

    def _unknown_fields(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Unknown and read-only names, and JSON values of the wrong type (DRF would coerce
        ``"3"`` to 3 or ``0`` to ``"0"``; the schema promises an integer or a string)."""
        errors: dict[str, Any] = {}
        for name, value in data.items():
            key = str(name)
            field = self.fields.get(key)
            if field is None or field.read_only:
                errors[key] = ["This field is read-only."] if key in self.read_only_names else ["Unknown field."]
            elif (message := _wrong_json_type(field, value)) is not None:
                errors[key] = [message]
        return errors


def _wrong_json_type(field: serializers.Field, value: Any) -> str | None:
    """A message if ``value`` is not of the JSON type the field's schema declares."""
    if value is None:
        return None  # DRF's own check: "may not be null" unless allow_null
    if isinstance(field, serializers.MultipleChoiceField):
        return None
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else "Must be a boolean."
    if isinstance(field, serializers.IntegerField | serializers.PrimaryKeyRelatedField):
        number = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        return None if number and not isinstance(value, bool) else "A valid integer is required."
    if isinstance(field, serializers.FloatField | serializers.DecimalField):
        return None if isinstance(value, int | float) and not isinstance(value, bool) else "A valid number is required."
    if isinstance(field, serializers.CharField | serializers.ChoiceField | serializers.DateTimeField):
        return None if isinstance(value, str) else "Not a valid string."
    return None


class TenantChoiceMixin(serializers.Serializer):
    """Optional ``tenant`` slug on create; defaults to the caller's only tenant allowing the write."""

    tenant = serializers.SlugField(
        required=False,
        max_length=50,
        help_text="Slug of the tenant to create in; optional if you can write in only one tenant.",
    )


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        # Field errors are also spread at the top level (DRF's shape), but never over the body's
        # own keys: an unknown input field named "errors" or "detail" must not reshape the answer.
        body: dict[str, Any] = {**exc.field_errors} if exc.field_errors else {}
        body.update({"detail": exc.message, "code": exc.code})
        if exc.field_errors:
            body["errors"] = exc.field_errors
        body.update(exc.extra())
        return Response(body, status=exc.status)
    if isinstance(exc, RequestDataTooBig):
        return Response({"detail": "Request body too large."}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, Http404):
        return Response({"detail": "Not found.", "code": "not_found"}, status=404)
    if isinstance(exc, IntegrityError):
        # Services check uniqueness first; two concurrent writes can still race past the check.
        logger.warning("integrity error answered with 409: %s", exc)
        return Response(
            {"detail": "This conflicts with a change made at the same time; retry.", "code": "conflict"}, status=409
        )
    if isinstance(exc, DataError):
        logger.warning("data error answered with 400: %s", exc)
        return Response({"detail": "A value is out of range for the database.", "code": "invalid"}, status=400)
    if isinstance(exc, exceptions.Throttled):
        return _throttled(exc)
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return Response({**detail, "detail": "Invalid input.", "code": "invalid", "errors": detail}, status=400)
    response = drf_exception_handler(exc, context)
    return response


def _throttled(exc: exceptions.Throttled) -> Response:
    """429 with ``Retry-After`` (whole seconds, at least 1) and the same number in the body."""
    wait = max(1, math.ceil(getattr(exc, "wait", None) or 1))
    body = {
        "detail": f"Too many requests; retry in {wait} s.",
        "code": "throttled",
        "retry_after": wait,
    }
    return Response(body, status=status.HTTP_429_TOO_MANY_REQUESTS, headers={"Retry-After": str(wait)})


# ----------------------------------------------------------------------------- ASGI


class BodySizeLimit:
    """ASGI wrapper answering 413 once a request body passes the limit, declared or chunked.

    Django's ASGI handler reads the whole body (spooling to disk) before any middleware runs,
    and ``BodySizeLimitMiddleware`` only sees a declared Content-Length; a chunked upload has
    none. This counts bytes as they arrive and stops at the limit. Wrap the HTTP app with it in
    ``console.asgi``.
    """

    def __init__(self, app: Any, max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        from django.conf import settings

        limit = self.max_bytes if self.max_bytes is not None else int(settings.HANGAR_MAX_BODY_BYTES)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await self._refuse(send, limit)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await self._refuse(send, limit)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        delivered = False

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return dict(await receive())  # later calls only wait for a disconnect

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Any, limit: int) -> None:
        body = json.dumps({"detail": f"Request body is larger than {limit} bytes."}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


__all__ = [
    "BodySizeLimit",
    "InputSerializer",
    "Pagination",
    "QueryFilterBackend",
    "StableOrderingFilter",
    "StrictJSONParser",
    "TenantChoiceMixin",
    "TenantSlugField",
    "exception_handler",
]


# ----------------------------------------------------------------------------- lean list pages


def _identity(value: Any) -> Any:
    return value


def _field_plan(field: Any, model: Any) -> tuple[str, Any] | None:
    """``(attribute, converter)`` for a field that reads one concrete column of the model and
    whose ``to_representation`` is known exactly; ``None`` sends the field the general way."""
    column = _concrete_column(field, model)
    if column is None:
        return None
    kind = type(field)
    if kind is serializers.PrimaryKeyRelatedField:
        if field.pk_field is not None or not column.is_relation or not column.many_to_one:
            return None
        return column.attname, _identity  # DRF answers the id (PKOnlyObject) for these
    if column.is_relation:
        return None
    convert = _converter(field, kind)
    return None if convert is None else (column.attname, convert)


def _concrete_column(field: Any, model: Any) -> Any:
    """The model column a field reads directly (one plain source attribute), or ``None``."""
    source_attrs = getattr(field, "source_attrs", None)
    if not source_attrs or len(source_attrs) != 1 or model is None:
        return None
    try:
        column = model._meta.get_field(source_attrs[0])
    except Exception:  # a property, an annotation, a reverse relation: DRF's own path
        return None
    return column if getattr(column, "concrete", False) else None


_PLAIN_CONVERTERS: dict[type, Any] = {
    serializers.CharField: str,
    serializers.IntegerField: int,
    serializers.FloatField: float,
}


def _converter(field: Any, kind: type) -> Any:
    if kind in _PLAIN_CONVERTERS:
        return _PLAIN_CONVERTERS[kind]
    if kind is serializers.JSONField:
        return None if field.binary else _identity
    if kind is serializers.DateTimeField:
        return _datetime_converter(field)
    if kind in (serializers.BooleanField, serializers.ChoiceField):
        return field.to_representation
    return None


def _datetime_converter(field: serializers.DateTimeField) -> Any:
    """``field.to_representation`` for aware datetimes in ISO 8601, with the field's time zone
    looked up once per page instead of once per value (a thread-local read in DRF each time);
    anything else (another format, naive values, no time zone) goes to DRF as before."""
    output_format = getattr(field, "format", api_settings.DATETIME_FORMAT)
    zone: Any = field.timezone if hasattr(field, "timezone") else field.default_timezone()
    if not isinstance(output_format, str) or output_format.lower() != ISO_8601 or zone is None:
        return field.to_representation
    general = field.to_representation

    def convert(value: Any) -> Any:
        if not isinstance(value, datetime.datetime) or value.utcoffset() is None:
            return general(value)
        try:
            text = value.astimezone(zone).isoformat()
        except OverflowError:
            return general(value)
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    return convert


def lean_rows(serializer: Any) -> list[dict[str, Any]]:
    """What ``serializer.data`` answers for a page of model instances, without DRF's generic
    per-field machinery for plain columns (``get_attribute``, the ``PKOnlyObject`` dance):
    each field is resolved once per page instead of once per row. Fields that are not plain
    columns (method fields, dotted sources, custom fields) go through DRF exactly as before,
    so the output is the same, key for key and in the same order."""
    child: Any = serializer.child
    if (
        type(serializer) is not serializers.ListSerializer
        or type(child).to_representation is not serializers.Serializer.to_representation
    ):
        return list(serializer.data)
    model = getattr(getattr(child, "Meta", None), "model", None)
    plan: list[tuple[str, Any, str | None, Any]] = []
    for field in child._readable_fields:
        fast = _field_plan(field, model)
        plan.append((field.field_name, field, fast[0] if fast else None, fast[1] if fast else None))
    rows = []
    instances: Any = serializer.instance
    for instance in instances:
        row: dict[str, Any] = {}
        for name, field, attname, convert in plan:
            if attname is not None:
                value = getattr(instance, attname)
                row[name] = None if value is None else convert(value)
                continue
            try:
                attribute = field.get_attribute(instance)
            except serializers.SkipField:
                continue
            check_for_none = attribute.pk if isinstance(attribute, PKOnlyObject) else attribute
            row[name] = None if check_for_none is None else field.to_representation(attribute)
        rows.append(row)
    return rows
