"""API keys, usage and audit endpoints."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from controlplane.core import secrets
from controlplane.keys.choices import KEY_PREFIX
from controlplane.keys.models import ApiKey
from controlplane.tenancy.choices import Role
from tests.controlplane.api_mixins import EndpointTests, rows
from tests.factories import ApiKeyFactory, AuditLogFactory, UsageRecordFactory


class TestApiKeys(EndpointTests):
    endpoint = "keys"
    detail_actions = {"revoke": ("post", {}, 200)}
    max_detail_queries = 4  # + created_by

    def make(self, tenant: Any) -> Any:
        return ApiKeyFactory(tenant=tenant)

    def create_data(self, tenant: Any) -> dict[str, Any]:
        return {"tenant": tenant.slug, "name": "ci", "rpm_limit": 60, "scopes": ["inference"]}

    def filters_reaching(self, obj: Any) -> list[dict[str, Any]]:
        return [{"tenant": obj.tenant.slug}, {"active": "true"}]


@pytest.mark.django_db
class TestApiKeyRules:
    def test_secret_is_shown_once(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        client = client_for(make_member(Role.OPERATOR, tenant))
        created = client.post("/api/v1/keys/", {"name": "ci"}, format="json").json()
        token = created["key"]
        parsed = secrets.parse(token, KEY_PREFIX)
        assert parsed is not None
        assert created["display_prefix"].endswith("…") and token.startswith(created["display_prefix"][:-1])
        stored = ApiKey.objects.get(pk=created["id"])
        assert secrets.digest_matches(parsed.secret, stored.digest) and parsed.secret not in stored.digest
        for body in (client.get(f"/api/v1/keys/{created['id']}/").json(), rows(client.get("/api/v1/keys/"))[0]):
            assert "key" not in body and parsed.secret not in str(body)

    def test_revoke(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        key = ApiKeyFactory(tenant=tenant)
        client = client_for(make_member(Role.OPERATOR, tenant))
        body = client.post(f"/api/v1/keys/{key.pk}/revoke/").json()
        assert body["revoked_at"] is not None and body["active"] is False
        assert [k["id"] for k in rows(client.get("/api/v1/keys/", {"active": "false"}))] == [key.pk]

    def test_burst_is_explicit(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        client = client_for(make_member(Role.OPERATOR, tenant))
        plain = client.post("/api/v1/keys/", {"name": "plain", "rpm_limit": 600}, format="json").json()
        assert plain["burst_percent"] == 0  # no hidden burst: at most the limit in any minute
        bursty = client.post("/api/v1/keys/", {"name": "b", "rpm_limit": 600, "burst_percent": 10}, format="json")
        assert bursty.status_code == 201 and bursty.json()["burst_percent"] == 10
        assert client.get(f"/api/v1/keys/{bursty.json()['id']}/").json()["burst_percent"] == 10
        for bad in (-1, 101, "lots", True):
            refused = client.post("/api/v1/keys/", {"name": "x", "burst_percent": bad}, format="json")
            assert refused.status_code == 400 and set(refused.json()["errors"]) == {"burst_percent"}, bad

    def test_bad_fields(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        client = client_for(make_member(Role.OPERATOR, tenant))
        past = (timezone.now() - timedelta(days=1)).isoformat()
        data = {"name": "", "scopes": ["root"], "rpm_limit": -1, "tpm_limit": 10**15, "expires_at": past}
        errors = client.post("/api/v1/keys/", data, format="json").json()["errors"]
        assert set(errors) == {"name", "scopes", "rpm_limit", "tpm_limit"}
        errors = client.post("/api/v1/keys/", {"name": "k", "expires_at": past}, format="json").json()["errors"]
        assert errors == {"expires_at": ["Must be in the future."]}


class TestUsage(EndpointTests):
    endpoint = "usage"
    list_actions = {"totals": 200}

    def make(self, tenant: Any) -> Any:
        return UsageRecordFactory(tenant=tenant, api_key=ApiKeyFactory(tenant=tenant))

    def make_many(self, tenant: Any, count: int, user: Any) -> None:
        key = ApiKeyFactory(tenant=tenant)
        for _ in range(count):
            UsageRecordFactory(tenant=tenant, api_key=key)

    def filters_reaching(self, obj: Any) -> list[dict[str, Any]]:
        since = (obj.minute - timedelta(minutes=1)).isoformat()
        return [{"tenant": obj.tenant.slug}, {"api_key": obj.api_key_id}, {"model": obj.model}, {"since": since}]


@pytest.mark.django_db
def test_usage_totals_per_key(tenant: Any, make_member: Any, client_for: Any) -> None:
    first, second = ApiKeyFactory(tenant=tenant, name="first"), ApiKeyFactory(tenant=tenant, name="second")
    for _ in range(3):
        UsageRecordFactory(tenant=tenant, api_key=first)
    UsageRecordFactory(tenant=tenant, api_key=second)
    client = client_for(make_member(Role.VIEWER, tenant))
    totals = rows(client.get("/api/v1/usage/totals/"))
    assert [(t["api_key_name"], t["requests"], t["prompt_tokens"], t["minutes"]) for t in totals] == [
        ("first", 6, 30, 3),
        ("second", 2, 10, 1),
    ]
    only = rows(client.get("/api/v1/usage/totals/", {"api_key": second.pk}))
    assert [t["api_key"] for t in only] == [second.pk]
    future = (timezone.now() + timedelta(days=1)).isoformat()
    assert rows(client.get("/api/v1/usage/totals/", {"since": future})) == []
    bad = client.get("/api/v1/usage/", {"since": "yesterday", "api_key": "k"})
    assert bad.status_code == 400 and set(bad.json()["errors"]) == {"since", "api_key"}


class TestAudit(EndpointTests):
    endpoint = "audit"

    def make(self, tenant: Any) -> Any:
        return AuditLogFactory(tenant=tenant)

    def filters_reaching(self, obj: Any) -> list[dict[str, Any]]:
        return [{"tenant": obj.tenant.slug}, {"action": obj.action}, {"object_type": obj.object_type}]


@pytest.mark.django_db
def test_writes_through_the_api_are_audited_with_source_ip(tenant: Any, make_member: Any, client_for: Any) -> None:
    admin = make_member(Role.ADMIN, tenant, username="ada")
    client = client_for(admin)
    created = client.post("/api/v1/keys/", {"name": "box"}, format="json", REMOTE_ADDR="10.1.2.3").json()
    rows_ = rows(client.get("/api/v1/audit/", {"action": "apikey.create", "actor": "ada"}))
    assert len(rows_) == 1
    assert rows_[0]["object_id"] == str(created["id"]) and rows_[0]["source_ip"] == "10.1.2.3"
    assert rows_[0]["tenant"] == tenant.slug
