"""Errors under /api/ are JSON, always: unknown URLs, wrong methods, oversized bodies, unhandled
exceptions (logged with the request id that the body repeats). Dashboard pages keep HTML errors."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from django.test import Client

from controlplane.tenancy.choices import Role

pytestmark = pytest.mark.django_db


def _json(response: Any) -> dict[str, Any]:
    assert response["Content-Type"].startswith("application/json"), (response.status_code, response["Content-Type"])
    body: dict[str, Any] = json.loads(response.content)
    return body


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("path", ["/api/v1/nope/", "/api/nope", "/api/v1/deployments/abc/", "/api/"])
def test_unknown_api_urls_are_json_404(settings: Any, debug: bool, path: str) -> None:
    settings.DEBUG = debug
    response = Client().get(path)
    assert response.status_code == 404
    assert _json(response) == {"detail": "Not Found", "code": "not_found"}


def test_unknown_dashboard_urls_keep_html(settings: Any) -> None:
    response = Client().get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_wrong_method_is_json_405_with_allow(make_member: Any) -> None:
    client = Client()
    client.force_login(make_member(Role.VIEWER))
    response = client.put("/api/v1/models/", "{}", content_type="application/json")
    assert response.status_code == 405
    assert _json(response)["detail"]
    assert "GET" in response["Allow"]
    # The schema view renders YAML or OpenAPI JSON by default; its 405 is plain JSON too.
    response = client.post("/api/schema/", "{}", content_type="application/json")
    assert response.status_code == 405
    assert _json(response)["code"] == "method_not_allowed"


def test_oversized_body_is_json_413(settings: Any) -> None:
    body = json.dumps({"name": "x" * (settings.HANGAR_MAX_BODY_BYTES + 1)})
    response = Client().generic("POST", "/api/v1/keys/", body, content_type="application/json")
    assert response.status_code == 413
    assert "larger than" in _json(response)["detail"]


@pytest.mark.urls("tests.console.urls_failing")
@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("path", ["/api/v1/failing/", "/api/failing-plain/"])
def test_unhandled_errors_are_json_500_with_the_logged_request_id(
    settings: Any, caplog: pytest.LogCaptureFixture, debug: bool, path: str
) -> None:
    settings.DEBUG = debug
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.ERROR, logger="console.middleware"):
        response = client.get(path, HTTP_X_REQUEST_ID="req-500-test")
    assert response.status_code == 500
    body = _json(response)
    assert body == {
        "detail": "The server failed to process the request.",
        "code": "server_error",
        "request_id": "req-500-test",
    }
    assert response["X-Request-ID"] == "req-500-test"
    logged = [r for r in caplog.records if r.name == "console.middleware" and "req-500-test" in r.getMessage()]
    assert logged and logged[0].exc_info and logged[0].exc_info[0] is ZeroDivisionError


@pytest.mark.urls("tests.console.urls_failing")
def test_unhandled_errors_of_pages_keep_html() -> None:
    response = Client(raise_request_exception=False).get("/failing-page/")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
