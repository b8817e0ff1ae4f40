"""Authentication: personal access tokens (Bearer), sessions with CSRF, no implicit identity."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.core import secrets
from controlplane.tenancy.choices import Role
from controlplane.tenancy.models import AccessToken
from controlplane.tenancy.services import TOKEN_PREFIX
from tests.controlplane.api_mixins import EndpointTests, rows
from tests.factories import AccessTokenFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    "",
    "tenants/",
    "members/",
    "models/",
    "targets/",
    "deployments/",
    "replicas/",
    "events/",
    "keys/",
    "usage/",
    "usage/totals/",
    "audit/",
    "tokens/",
]


def bearer(token: str) -> APIClient:
    client = APIClient(REMOTE_ADDR="127.0.0.1")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.mark.parametrize("path", ENDPOINTS)
def test_no_implicit_identity_even_from_localhost(path: str) -> None:
    client = APIClient(REMOTE_ADDR="127.0.0.1")
    response = client.get(f"/api/v1/{path}")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert client.post(f"/api/v1/{path}", {}, format="json").status_code in (401, 405)


def test_bearer_token_authenticates(tenant: Any, make_member: Any) -> None:
    user = make_member(Role.VIEWER, tenant)
    token = AccessTokenFactory(user=user)
    secret = token.secret
    response = bearer(secret).get("/api/v1/tenants/")
    assert response.status_code == 200
    assert [t["slug"] for t in rows(response)] == [tenant.slug]
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_last_used_is_written_at_most_every_few_minutes(tenant: Any, make_member: Any) -> None:
    token = AccessTokenFactory(user=make_member(Role.VIEWER, tenant))
    secret = token.secret
    client = bearer(secret)
    client.get("/api/v1/tenants/")
    first = AccessToken.objects.get(pk=token.pk).last_used_at
    client.get("/api/v1/tenants/")
    assert AccessToken.objects.get(pk=token.pk).last_used_at == first


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # checksum fails
        lambda t: t.replace("hgp_", "hgr_"),  # an API key is not an access token
        lambda t: "hgp_short",
        lambda t: t + "x",
        lambda t: "é" * 10,
    ],
)
def test_malformed_tokens_are_401(mangle: Any, tenant: Any, make_member: Any) -> None:
    secret = AccessTokenFactory(user=make_member(Role.VIEWER, tenant)).secret
    assert bearer(mangle(secret)).get("/api/v1/tenants/").status_code == 401


def test_wrong_secret_with_valid_checksum_is_401(tenant: Any, make_member: Any) -> None:
    token = AccessTokenFactory(user=make_member(Role.VIEWER, tenant))
    body = f"{TOKEN_PREFIX}_{token.key_id}_{'a' * secrets.SECRET_LEN}"
    forged = body + secrets._checksum(body)
    assert secrets.parse(forged, TOKEN_PREFIX) is not None
    assert bearer(forged).get("/api/v1/tenants/").status_code == 401


def test_revoked_token_is_refused(tenant: Any, make_member: Any, client_for: Any) -> None:
    user = make_member(Role.VIEWER, tenant)
    token = AccessTokenFactory(user=user)
    secret = token.secret
    assert bearer(secret).get("/api/v1/tenants/").status_code == 200
    assert client_for(user).post(f"/api/v1/tokens/{token.pk}/revoke/").status_code == 200
    response = bearer(secret).get("/api/v1/tenants/")
    assert response.status_code == 401
    assert response.json()["detail"] == "This access token was revoked."


def test_expired_token_is_refused(tenant: Any, make_member: Any) -> None:
    secret = AccessTokenFactory(
        user=make_member(Role.VIEWER, tenant), expires_at=timezone.now() + timedelta(hours=1)
    ).secret
    assert bearer(secret).get("/api/v1/tenants/").status_code == 200
    with time_machine.travel(timezone.now() + timedelta(hours=2)):
        response = bearer(secret).get("/api/v1/tenants/")
    assert response.status_code == 401
    assert response.json()["detail"] == "This access token has expired."


def test_inactive_user_token_is_refused(tenant: Any, make_member: Any) -> None:
    user = make_member(Role.VIEWER, tenant)
    secret = AccessTokenFactory(user=user).secret
    user.is_active = False
    user.save()
    assert bearer(secret).get("/api/v1/tenants/").status_code == 401


def test_token_created_through_the_api_works_once_shown(tenant: Any, make_member: Any, client_for: Any) -> None:
    user = make_member(Role.OPERATOR, tenant)
    client = client_for(user)
    expires = (timezone.now() + timedelta(days=30)).isoformat()
    created = client.post("/api/v1/tokens/", {"name": "ci", "expires_at": expires}, format="json").json()
    assert created["token"].startswith("hgp_") and created["active"] is True
    assert "token" not in client.get(f"/api/v1/tokens/{created['id']}/").json()
    assert bearer(created["token"]).get("/api/v1/deployments/").status_code == 200
    past = (timezone.now() - timedelta(days=1)).isoformat()
    response = client.post("/api/v1/tokens/", {"name": "old", "expires_at": past}, format="json")
    assert response.status_code == 400 and "expires_at" in response.json()["errors"]


def test_a_token_cannot_mint_tokens(tenant: Any, make_member: Any) -> None:
    secret = AccessTokenFactory(user=make_member(Role.OWNER, tenant)).secret
    response = bearer(secret).post("/api/v1/tokens/", {"name": "child"}, format="json")
    assert response.status_code == 403


def test_session_writes_need_csrf(tenant: Any, make_member: Any) -> None:
    user = make_member(Role.OPERATOR, tenant)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get("/api/v1/keys/").status_code == 200
    response = client.post("/api/v1/keys/", {"name": "k"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


class TestTokens(EndpointTests):
    """Tokens belong to a user, not a tenant: every role manages its own, nobody sees others'."""

    endpoint = "tokens"
    detail_actions = {"revoke": ("post", {}, 200)}

    def make(self, tenant: Any) -> Any:
        return AccessTokenFactory(user=MembershipFactory(tenant=tenant).user)

    def make_for(self, tenant: Any, user: Any) -> Any:
        return AccessTokenFactory(user=user)

    def create_data(self, tenant: Any) -> dict[str, Any]:
        return {"name": "ci"}

    def filters_reaching(self, obj: Any) -> list[dict[str, Any]]:
        return []

    def test_other_users_tokens_are_404(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        mine = make_member(Role.OWNER, tenant)
        theirs = AccessTokenFactory(user=UserFactory())
        client = client_for(mine)
        assert client.get(f"/api/v1/tokens/{theirs.pk}/").status_code == 404
        assert client.post(f"/api/v1/tokens/{theirs.pk}/revoke/").status_code == 404
        assert theirs.pk not in {t["id"] for t in rows(client.get("/api/v1/tokens/"))}


def test_bearer_writes_need_no_csrf(tenant: Any, make_member: Any) -> None:
    secret = AccessTokenFactory(user=make_member(Role.OPERATOR, tenant)).secret
    response = bearer(secret).post("/api/v1/keys/", {"name": "from-ci"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["created_by"] is not None
