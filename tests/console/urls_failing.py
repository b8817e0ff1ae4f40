"""Test-only URLs: the real URL configuration plus views that fail, under /api/ and for pages."""

from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response


def _divide(numbers: list[int]) -> float:
    return sum(numbers) / len(numbers)  # ZeroDivisionError for an empty list: a real bug


@api_view(["GET"])
@authentication_classes([])
@permission_classes([])
def failing_api_view(request: Request) -> Response:
    return Response({"mean": _divide([])})


def failing_plain_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(_divide([])))


urlpatterns = [
    path("api/v1/failing/", failing_api_view),
    path("api/failing-plain/", failing_plain_view),
    path("failing-page/", failing_plain_view),
    path("", include("console.urls")),
]
