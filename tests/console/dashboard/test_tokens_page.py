"""The dashboard's token page: create (secret shown once), list with last use, revoke (with the
API keys the token made, when asked)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from rest_framework.test import APIClient

from controlplane.keys.models import ApiKey
from controlplane.tenancy.models import AccessToken
from tests.factories import PlatformAdminFactory, UserFactory

pytestmark = pytest.mark.django_db


def secret_in(page: str) -> str:
    found = re.search(r'data-testid="token-secret">(hgp_[A-Za-z0-9_]+)<', page)
    assert found, "no secret on the page"
    return found.group(1)


def test_create_list_and_revoke_with_keys(team: dict[str, Any], login: Any) -> None:
    owner = team["owner"]
    client = login(owner)
    assert client.get("/tokens/").status_code == 200

    created = client.post("/tokens/", {"name": "deploy-bot", "scopes": "admin", "expires_in_days": "10"})
    assert created.status_code == 201 and created["Cache-Control"] == "no-store"
    secret = secret_in(created.content.decode())
    token = AccessToken.objects.get(user=owner, name="deploy-bot")
    assert token.scopes == ["read", "write", "admin"]
    assert secret not in client.get("/tokens/").content.decode()  # shown once

    api = APIClient(REMOTE_ADDR="10.3.3.3")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    key = api.post("/api/v1/keys/", {"name": "from-bot"}, format="json")
    assert key.status_code == 201, key.content
    listing = client.get("/tokens/").content.decode()
    row = listing.split(f'data-token="{token.pk}"', 1)[1].split("</tr>", 1)[0]
    assert "10.3.3.3" in row and "admin" in row and "also its 1 API key" in row

    revoked = client.post(f"/tokens/{token.pk}/revoke/", {"revoke_keys": "on"})
    assert revoked.status_code == 302
    assert AccessToken.objects.get(pk=token.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=key.json()["id"]).revoked_at is not None
    assert api.get("/api/v1/tenants/").status_code == 401
    assert "revoked" in client.get("/tokens/").content.decode().split(f'data-token="{token.pk}"', 1)[1]


def test_bad_input_and_other_users_tokens(team: dict[str, Any], login: Any, settings: Any) -> None:
    settings.HANGAR_TOKEN_MAX_DAYS = 30
    client = login(team["viewer"])
    too_long = client.post("/tokens/", {"name": "x", "scopes": "read", "expires_in_days": "31"})
    assert too_long.status_code == 400 and b"at most 30 days" in too_long.content
    theirs = AccessToken.objects.create(user=UserFactory(), name="theirs", key_id="k" * 12, digest="0" * 64)
    assert client.post(f"/tokens/{theirs.pk}/revoke/").status_code == 404
    assert b"theirs" not in client.get("/tokens/").content
    assert AccessToken.objects.get(pk=theirs.pk).revoked_at is None


def test_a_platform_admin_without_tenant_has_the_page(login: Any) -> None:
    page = login(PlatformAdminFactory()).get("/tokens/")
    assert page.status_code == 200 and b'id="token-create"' in page.content and b'data-nav="security"' in page.content
