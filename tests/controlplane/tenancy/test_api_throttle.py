"""REST API throttles per user and per token, counted in the real Redis: 429, Retry-After, JSON."""

from __future__ import annotations

from typing import Any

import pytest
import time_machine
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.tenancy.choices import Role
from tests.factories import AccessTokenFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("private_redis_namespace")]


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def exhaust(client: APIClient, allowed: int, path: str = "/api/v1/tenants/") -> Any:
    """``allowed`` requests pass; the next one is refused and returned."""
    for number in range(allowed):
        response = client.get(path)
        assert response.status_code == 200, (number, response.content[:200])
    return client.get(path)


def assert_throttled(response: Any) -> int:
    assert response.status_code == 429, response.content[:300]
    body = response.json()
    assert body["code"] == "throttled"
    retry_after = int(response["Retry-After"])
    assert retry_after >= 1 and body["retry_after"] == retry_after
    return retry_after


def test_a_token_is_throttled_with_retry_after(tenant: Any, make_member: Any, settings: Any) -> None:
    settings.HANGAR_API_RATE_TOKEN = "5/min"
    token = AccessTokenFactory(user=make_member(Role.VIEWER, tenant), scopes=["read"])
    start = timezone.now().replace(second=1, microsecond=0)  # early in a window: all 5 fit in it
    with time_machine.travel(start, tick=False):
        client = bearer(token.secret)
        retry_after = assert_throttled(exhaust(client, 5))
        assert 55 <= retry_after <= 60  # until the minute's window has slid on
        assert client.get("/api/v1/deployments/").status_code == 429  # one count over every endpoint
    with time_machine.travel(start.timestamp() + retry_after - 2, tick=False):
        assert_throttled(client.get("/api/v1/tenants/"))
    with time_machine.travel(start.timestamp() + retry_after, tick=False):
        assert client.get("/api/v1/tenants/").status_code == 200  # Retry-After told the truth


def test_each_token_has_its_own_count(tenant: Any, make_member: Any, settings: Any) -> None:
    settings.HANGAR_API_RATE_TOKEN = "3/min"
    user = make_member(Role.VIEWER, tenant)
    first, second = (AccessTokenFactory(user=user, scopes=["read"]) for _ in range(2))
    with time_machine.travel(timezone.now().replace(second=1), tick=False):
        assert_throttled(exhaust(bearer(first.secret), 3))
        assert bearer(second.secret).get("/api/v1/tenants/").status_code == 200


def test_a_user_is_throttled_across_sessions_and_tokens(
    tenant: Any, make_member: Any, settings: Any, client_for: Any
) -> None:
    settings.HANGAR_API_RATE_USER = "4/min"
    user = make_member(Role.VIEWER, tenant)
    token = AccessTokenFactory(user=user, scopes=["read"])
    with time_machine.travel(timezone.now().replace(second=1), tick=False):
        session = APIClient()
        session.force_login(user)
        for _ in range(2):
            assert session.get("/api/v1/tenants/").status_code == 200
        assert_throttled(exhaust(bearer(token.secret), 2))  # the token's requests count for the user
        assert_throttled(session.get("/api/v1/tenants/"))
        other = make_member(Role.VIEWER, tenant)
        assert client_for(other).get("/api/v1/tenants/").status_code == 200


def test_the_previous_window_still_weighs(tenant: Any, make_member: Any, settings: Any) -> None:
    """Not a fixed window: a full minute just before a boundary is not followed by a second one."""
    settings.HANGAR_API_RATE_TOKEN = "10/min"
    token = AccessTokenFactory(user=make_member(Role.VIEWER, tenant), scopes=["read"])
    boundary = timezone.now().replace(second=0, microsecond=0).timestamp() + 60
    client = bearer(token.secret)
    with time_machine.travel(boundary - 1, tick=False):
        assert_throttled(exhaust(client, 10))
    with time_machine.travel(boundary + 6, tick=False):  # 90% of the previous window still counts: 9
        assert_throttled(exhaust(client, 1))
    with time_machine.travel(boundary + 30, tick=False):  # half of it counts: 5, plus the 1 just made
        assert_throttled(exhaust(client, 4))


def test_the_schema_documents_429() -> None:
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert "429" in schema["paths"]["/api/v1/deployments/"]["get"]["responses"]
