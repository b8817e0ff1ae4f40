"""The REST API and dashboard with the database unreachable (its port closed): 503 with
``Retry-After``, JSON under ``/api/``, a small page elsewhere, never Django's 500 or debug page.
The slow end-to-end version is ``tests/controlplane/gateway/test_database_outage.py``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, connections
from django.test import Client

from console.middleware import DATABASE_RETRY_AFTER_S
from controlplane.core import secrets
from controlplane.tenancy.services import TOKEN_PREFIX
from tests.support.ports import free_port


@pytest.fixture
def database_down(django_db_blocker: Any) -> Iterator[None]:
    """The default connection pointed at a closed port: every query fails to connect."""
    connection = connections[DEFAULT_DB_ALIAS]
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    with django_db_blocker.unblock():
        try:
            yield
        finally:
            connection.close()
            connection.settings_dict["PORT"] = port


@pytest.mark.parametrize("debug", [False, True])
def test_api_answers_503_json_when_the_database_is_down(database_down: None, settings: Any, debug: bool) -> None:
    settings.DEBUG = debug
    token = secrets.issue(TOKEN_PREFIX).token  # well formed: authentication looks it up
    response = Client().get("/api/v1/deployments/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == str(DATABASE_RETRY_AFTER_S)
    assert json.loads(response.content) == {
        "detail": "The database is unavailable; try again shortly.",
        "code": "database_unavailable",
    }
    assert b"Traceback" not in response.content


@pytest.mark.parametrize("debug", [False, True])
def test_dashboard_answers_a_503_page_when_the_database_is_down(
    database_down: None, settings: Any, debug: bool
) -> None:
    settings.DEBUG = debug
    client = Client()
    client.cookies["sessionid"] = "x" * 32  # the session is read from the database
    response = client.get("/")
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert response["Retry-After"] == str(DATABASE_RETRY_AFTER_S)
    assert b"briefly unavailable" in response.content
    assert b"Traceback" not in response.content and b"OperationalError" not in response.content


def test_probes_during_the_outage(database_down: None) -> None:
    probe = Client(HTTP_HOST="localhost")
    assert probe.get("/healthz").status_code == 200
    response = probe.get("/readyz")
    assert response.status_code == 503
    assert "Retry-After" in response
