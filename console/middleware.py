"""HTTP middleware of the dashboard and REST API."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from controlplane.core import request_id


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
        if length > settings.HANGAR_MAX_BODY_BYTES:
            return JsonResponse(
                {"detail": f"Request body is larger than {settings.HANGAR_MAX_BODY_BYTES} bytes."},
                status=413,
            )
        return self.get_response(request)
