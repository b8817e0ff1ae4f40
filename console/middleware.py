"""HTTP middleware of the dashboard and REST API."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


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
