"""The probe endpoints, through the full middleware stack as the kubelet calls them: anonymous,
no session, ``Host: localhost``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, connections
from django.test import Client

from console import health
from tests.support.ports import free_port


@pytest.fixture
def probe() -> Client:
    return Client(HTTP_HOST="localhost")


@pytest.fixture(autouse=True)
def fresh_migrations_check() -> Iterator[None]:
    health.forget_migrations_check()
    yield
    health.forget_migrations_check()


def body(response: Any) -> dict[str, Any]:
    assert response["Content-Type"] == "application/json"
    assert b"Traceback" not in response.content
    return dict(json.loads(response.content))


def test_healthz_answers_without_database_or_redis(probe: Client, settings: Any) -> None:
    # No django_db mark: pytest-django makes any database access raise (and the view answer 500).
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.CELERY_BROKER_URL = settings.REDIS_URL
    response = probe.get("/healthz")
    assert response.status_code == 200
    assert body(response) == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_ok_with_database_redis_and_migrations(probe: Client) -> None:
    response = probe.get("/readyz")
    assert response.status_code == 200, response.content
    assert body(response) == {"status": "ok", "checks": {"database": "ok", "redis": "ok", "migrations": "ok"}}


@pytest.mark.django_db
def test_readyz_503_when_redis_unreachable(probe: Client, settings: Any) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = probe.get("/readyz")
    assert response.status_code == 503
    assert response["Retry-After"] == str(health.RETRY_AFTER_S)
    answer = body(response)
    assert answer["failed"] == ["redis"]
    assert answer["checks"] == {"database": "ok", "redis": "unreachable", "migrations": "ok"}
    assert "127.0.0.1" not in response.content.decode()  # no addresses to anonymous callers


@pytest.mark.django_db
def test_readyz_503_when_database_unreachable(probe: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # The probe opens its own connection from the alias's settings; point them at a closed port.
    monkeypatch.setitem(connections.settings[DEFAULT_DB_ALIAS], "PORT", str(free_port()))
    response = probe.get("/readyz")
    assert response.status_code == 503
    assert response["Retry-After"] == str(health.RETRY_AFTER_S)
    answer = body(response)
    assert answer["failed"] == ["database", "migrations"]
    assert answer["checks"]["database"] == "unreachable"
    assert answer["checks"]["migrations"] == "skipped: database unreachable"


@pytest.mark.django_db(transaction=True)
def test_readyz_503_while_a_migration_is_unapplied(probe: Client) -> None:
    assert probe.get("/readyz").status_code == 200
    try:
        call_command("migrate", "usage", "zero", verbosity=0)
        # Migrations never un-apply in production: a passed check is not repeated.
        assert probe.get("/readyz").status_code == 200
        health.forget_migrations_check()
        response = probe.get("/readyz")
        assert response.status_code == 503
        answer = body(response)
        assert answer["failed"] == ["migrations"]
        assert answer["checks"]["migrations"] == "1 unapplied migration(s)"
    finally:
        call_command("migrate", "usage", verbosity=0)
    response = probe.get("/readyz")
    assert response.status_code == 200, response.content
