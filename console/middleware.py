"""HTTP middleware of the dashboard and REST API."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from typing import Any

import structlog
from django.conf import settings
from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

from controlplane.core import request_id

logger = logging.getLogger(__name__)


class RequestIdMiddleware:
    """Give every request an id (the client's sane ``X-Request-ID`` or a new one), bind it to the
    log context for the request's duration and answer it in the ``X-Request-ID`` header.

    First in ``MIDDLEWARE``, so even a 413 or a CSRF refusal carries it. Tasks enqueued while it is
    bound carry it to the worker (``controlplane.core.tasks``).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = request_id.accept(request.META.get("HTTP_X_REQUEST_ID"))
        request_id.bind(rid)
        try:
            response = self.get_response(request)
        finally:
            structlog.contextvars.clear_contextvars()  # a pooled thread must not carry it on
        response[request_id.HEADER] = rid
        return response


UPLOAD_CHUNK_PATH = re.compile(r"^/api/v1/uploads/[0-9]{1,18}/chunk/$")


class BodySizeLimitMiddleware:
    """Answer 413 for a declared body larger than ``HANGAR_MAX_BODY_BYTES`` before reading it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        declared = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(declared)
        except ValueError:
            return JsonResponse({"detail": "Content-Length is not a number."}, status=400)
        limit = settings.HANGAR_MAX_BODY_BYTES
        if request.method == "PUT" and UPLOAD_CHUNK_PATH.match(request.path_info):
            limit = max(limit, settings.HANGAR_UPLOAD_CHUNK_BYTES)  # model upload chunks (issue 14)
        if length > limit:
            return JsonResponse({"detail": f"Request body is larger than {limit} bytes."}, status=413)
        return self.get_response(request)


DATABASE_RETRY_AFTER_S = 5
_DATABASE_ERRORS = (OperationalError, InterfaceError)
_DATABASE_ERROR_SEEN = "_hangar_database_error"
_UNAVAILABLE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Hangar is briefly unavailable</title></head>
<body><h1>Hangar is briefly unavailable</h1>
<p>The console cannot reach its database. Serving models through the gateway goes on; this page
will work again as soon as the database is back. Try again in a few seconds.</p></body></html>
"""


def database_unavailable_response(request: HttpRequest) -> HttpResponse:
    """503 with ``Retry-After``: JSON under ``/api/``, a small page (no template, no database) elsewhere."""
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = JsonResponse(
            {"detail": "The database is unavailable; try again shortly.", "code": "database_unavailable"},
            status=503,
        )
    else:
        response = HttpResponse(_UNAVAILABLE_PAGE, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
    response["Cache-Control"] = "no-store"
    return response


def _note_database_error(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    # Sent while Django turns an exception into its 500 page; the exception is the current one.
    exc = sys.exc_info()[1]
    if request is not None and isinstance(exc, _DATABASE_ERRORS):
        setattr(request, _DATABASE_ERROR_SEEN, True)


got_request_exception.connect(_note_database_error, dispatch_uid="hangar-database-unavailable")


class DatabaseUnavailableMiddleware:
    """Answer 503 with ``Retry-After`` instead of a 500 (or Django's debug page) when the
    database cannot be reached (``OperationalError``/``InterfaceError``), wherever it is raised:
    in a view (``process_exception``) or in another middleware, such as the session's save,
    (Django has already made a 500 of it; the signal above marked the request).

    Second in ``MIDDLEWARE``, right after the request id, so only the request id wraps it.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 500 and getattr(request, _DATABASE_ERROR_SEEN, False):
            return database_unavailable_response(request)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, _DATABASE_ERRORS):
            return None
        logger.warning(
            "database unavailable on %s %s: %s", request.method, request.path[:200], type(exception).__name__
        )
        return database_unavailable_response(request)


JSON_ERROR_PREFIXES = ("/api/", "/v1/")


def _wants_json_errors(request: HttpRequest) -> bool:
    return request.path.startswith(JSON_ERROR_PREFIXES)


def json_error_response(request: HttpRequest, status: int, detail: str, code: str) -> JsonResponse:
    body: dict[str, Any] = {"detail": detail, "code": code}
    if status >= 500:
        body["request_id"] = request_id.current() or ""
    return JsonResponse(body, status=status)


_ERROR_CODES = {
    400: "invalid",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    500: "server_error",
}


class ApiErrorMiddleware:
    """Errors under ``/api/`` (and ``/v1/``, should one reach Django) are JSON, always.

    DRF views answer their own errors as JSON (``controlplane.core.api.exception_handler``); this
    covers the rest: unknown URLs (Django's 404 page), other HTML error pages (Django's 400, 403,
    405, 500 or debug pages), and exceptions a view did not handle, which are logged with the
    request id that the 500's body repeats. Dashboard pages keep their HTML errors. After
    ``DatabaseUnavailableMiddleware`` in ``MIDDLEWARE`` so that an unreachable database stays a 503.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code < 400 or not _wants_json_errors(request):
            return response
        if (response.get("Content-Type") or "").startswith("application/json"):
            return response
        status = response.status_code
        replacement = json_error_response(
            request, status, response.reason_phrase or "Error.", _ERROR_CODES.get(status, "error")
        )
        for header in ("Allow", "Retry-After", "WWW-Authenticate"):
            if header in response:
                replacement[header] = response[header]
        return replacement

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not _wants_json_errors(request) or isinstance(exception, _DATABASE_ERRORS):
            return None
        rid = request_id.current() or ""
        logger.error(
            "unhandled error on %s %s (request id %s)",
            request.method,
            request.path[:200],
            rid,
            exc_info=(type(exception), exception, exception.__traceback__),
        )
        return json_error_response(request, 500, "The server failed to process the request.", "server_error")
