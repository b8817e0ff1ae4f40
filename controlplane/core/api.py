"""REST API plumbing shared by every app: pagination, filtering, errors in one place."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from controlplane.core.exceptions import DomainError

logger = logging.getLogger(__name__)


class Pagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500


class QueryFilterBackend:
    """Pass whitelisted query parameters to the viewset's selector as ``filters``.

    Viewsets declare ``filter_fields``; the selector does the filtering (tenant scope first).
    This backend only exists so the parameters appear in the OpenAPI schema.
    """

    def filter_queryset(self, request: Request, queryset: Any, view: Any) -> Any:
        return queryset

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        if getattr(view, "action", None) not in (None, "list"):
            return []
        return [
            {"name": name, "required": False, "in": "query", "schema": {"type": "string"}}
            for name in getattr(view, "filter_fields", ())
        ]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        body: dict[str, Any] = {"detail": exc.message, "code": exc.code}
        if exc.field_errors:
            body["errors"] = exc.field_errors
            body.update(exc.field_errors)
        return Response(body, status=exc.status)
    if isinstance(exc, RequestDataTooBig):
        return Response({"detail": "Request body too large."}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, Http404):
        return Response({"detail": "Not found.", "code": "not_found"}, status=404)
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return Response({"detail": "Invalid input.", "code": "invalid", "errors": detail, **detail}, status=400)
    response = drf_exception_handler(exc, context)
    return response
