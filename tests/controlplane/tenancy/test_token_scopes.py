"""Personal access tokens like GitHub's fine-grained ones: scopes, expiry, last use, revocation
with the keys a token made, and token audit rows that someone can actually see.

The scope tests walk the served OpenAPI document: every write operation there, whatever is
added later, is tried with a read-only token.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.audit.models import AuditLog
from controlplane.keys.models import ApiKey
from controlplane.tenancy.choices import Role
from controlplane.tenancy.models import AccessToken, Membership
from tests.controlplane.api_mixins import rows
from tests.factories import AccessTokenFactory, MembershipFactory, PlatformAdminFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

WRITE_METHODS = ("post", "put", "patch", "delete")


def bearer(secret: str, address: str = "127.0.0.1") -> APIClient:
    client = APIClient(REMOTE_ADDR=address)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def served_operations() -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every operation in the schema the server serves."""
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    return [
        (method, path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def concrete(path: str, slug: str) -> str:
    """A URL for ``path``: numeric ids and the tenant's slug in place of the parameters."""
    return re.sub(r"\{(\w+)\}", lambda m: slug if m.group(1) == "slug" else "1", path)


def call(client: APIClient, method: str, url: str) -> Any:
    return getattr(client, method)(url, {}, format="json")


@pytest.fixture
def almighty(tenant: Any) -> Any:
    """A superuser who owns the tenant: any refusal below comes from the token, never the roles."""
    user = UserFactory(is_superuser=True, is_staff=True)
    MembershipFactory(user=user, tenant=tenant, role=Role.OWNER)
    return user


def test_every_write_operation_is_documented_with_its_scope() -> None:
    operations = served_operations()
    writes = [(m, p, op) for m, p, op in operations if m in WRITE_METHODS]
    assert len(writes) >= 20, "the walk must see the whole API"
    for method, path, operation in operations:
        expected = {"read"} if method == "get" else {"write", "admin"}
        assert operation.get("x-token-scope") in expected, (method, path)
    scope = {(m, p): op["x-token-scope"] for m, p, op in operations}
    # Membership changes and API key creation need admin; so does every platform write.
    assert scope[("post", "/api/v1/members/")] == "admin"
    assert scope[("patch", "/api/v1/members/{id}/")] == "admin"
    assert scope[("delete", "/api/v1/members/{id}/")] == "admin"
    assert scope[("post", "/api/v1/keys/")] == "admin"
    assert all(s == "admin" for (m, p), s in scope.items() if m in WRITE_METHODS and "/platform/" in p)
    assert scope[("post", "/api/v1/deployments/")] == "write"


def test_a_read_token_is_refused_on_every_write_operation(tenant: Any, almighty: Any) -> None:
    token = AccessTokenFactory(user=almighty, scopes=["read"])
    client = bearer(token.secret)
    audit_before = AuditLog.objects.count()
    members_before = list(Membership.objects.values_list("pk", "role"))
    writes = [(m, p, op) for m, p, op in served_operations() if m in WRITE_METHODS]
    for method, path, operation in writes:
        response = call(client, method, concrete(path, tenant.slug))
        assert response.status_code == 403, (method, path, response.status_code, response.content[:300])
        body = response.json()
        assert body["code"] == "insufficient_scope", (method, path, body)
        assert body["needed_scope"] == operation["x-token-scope"], (method, path)
    # Nothing was written: every service writes an audit row.
    assert AuditLog.objects.count() == audit_before
    assert list(Membership.objects.values_list("pk", "role")) == members_before
    assert not ApiKey.objects.exists()


def test_a_read_token_reads_everything_its_user_may(tenant: Any, almighty: Any) -> None:
    client = bearer(AccessTokenFactory(user=almighty, scopes=["read"]).secret)
    for method, path, _ in served_operations():
        if method == "get" and "{" not in path:
            response = client.get(path)
            assert response.status_code == 200, (path, response.content[:300])


def test_a_write_token_is_refused_exactly_where_admin_is_needed(tenant: Any, almighty: Any) -> None:
    client = bearer(AccessTokenFactory(user=almighty, scopes=["write"]).secret)
    for method, path, operation in served_operations():
        if method not in WRITE_METHODS:
            continue
        response = call(client, method, concrete(path, tenant.slug))
        refused_for_scope = response.status_code == 403 and response.json().get("code") == "insufficient_scope"
        assert refused_for_scope == (operation["x-token-scope"] == "admin"), (method, path, response.content[:300])


def test_membership_changes_need_an_admin_token(tenant: Any, almighty: Any) -> None:
    newcomer = UserFactory()
    write = bearer(AccessTokenFactory(user=almighty, scopes=["read", "write"]).secret)
    body = {"tenant": tenant.slug, "username": newcomer.username, "role": "admin"}
    assert write.post("/api/v1/members/", body, format="json").status_code == 403
    admin = bearer(AccessTokenFactory(user=almighty, scopes=["admin"]).secret)
    assert admin.post("/api/v1/members/", body, format="json").status_code == 201
    assert Membership.objects.filter(user=newcomer, tenant=tenant, role=Role.ADMIN).exists()


def test_scopes_never_exceed_the_role(tenant: Any, make_member: Any) -> None:
    viewer = make_member(Role.VIEWER, tenant)
    client = bearer(AccessTokenFactory(user=viewer, scopes=["admin"]).secret)
    response = client.post("/api/v1/keys/", {"name": "k", "tenant": tenant.slug}, format="json")
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"


# ----------------------------------------------------------------------------- creation and expiry


def test_created_tokens_default_to_read_and_expire(
    tenant: Any, make_member: Any, client_for: Any, settings: Any
) -> None:
    settings.HANGAR_TOKEN_DEFAULT_DAYS = 7
    settings.HANGAR_TOKEN_MAX_DAYS = 30
    session = client_for(make_member(Role.OWNER, tenant))
    created = session.post("/api/v1/tokens/", {"name": "ci"}, format="json").json()
    assert created["scopes"] == ["read"]
    expires = AccessToken.objects.get(pk=created["id"]).expires_at
    assert expires is not None and abs(expires - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)

    too_far = (timezone.now() + timedelta(days=31)).isoformat()
    response = session.post("/api/v1/tokens/", {"name": "forever", "expires_at": too_far}, format="json")
    assert response.status_code == 400 and "30 days" in response.json()["errors"]["expires_at"][0]
    response = session.post("/api/v1/tokens/", {"name": "x", "scopes": ["root"]}, format="json")
    assert response.status_code == 400 and "scopes" in response.json()["errors"]

    both = session.post("/api/v1/tokens/", {"name": "w", "scopes": ["write", "read"]}, format="json").json()
    assert both["scopes"] == ["read", "write"]


def test_last_use_and_address_are_recorded_and_shown(tenant: Any, make_member: Any, client_for: Any) -> None:
    user = make_member(Role.VIEWER, tenant)
    token = AccessTokenFactory(user=user, scopes=["read"])
    assert bearer(token.secret, "10.1.2.3").get("/api/v1/tenants/").status_code == 200
    shown = client_for(user).get(f"/api/v1/tokens/{token.pk}/").json()
    assert shown["last_used_ip"] == "10.1.2.3" and shown["last_used_at"] is not None
    # A new address is recorded at once, not after the last-used granularity.
    assert bearer(token.secret, "10.9.9.9").get("/api/v1/tenants/").status_code == 200
    assert client_for(user).get(f"/api/v1/tokens/{token.pk}/").json()["last_used_ip"] == "10.9.9.9"


# ----------------------------------------------------------------------------- revocation


def test_revoking_a_token_can_revoke_the_keys_it_created(tenant: Any, make_member: Any, client_for: Any) -> None:
    owner = make_member(Role.OWNER, tenant)
    session = client_for(owner)
    token = AccessTokenFactory(user=owner, scopes=["admin"])
    client = bearer(token.secret)
    made = [client.post("/api/v1/keys/", {"name": f"ci-{i}"}, format="json").json()["id"] for i in range(2)]
    by_session = session.post("/api/v1/keys/", {"name": "by-hand"}, format="json").json()["id"]
    assert set(ApiKey.objects.filter(created_by_token=token).values_list("pk", flat=True)) == set(made)

    response = session.post(f"/api/v1/tokens/{token.pk}/revoke/", {"revoke_keys": True}, format="json")
    assert response.status_code == 200 and response.json()["active"] is False
    assert all(ApiKey.objects.get(pk=pk).revoked_at is not None for pk in made)
    assert ApiKey.objects.get(pk=by_session).revoked_at is None
    assert bearer(token.secret).get("/api/v1/tenants/").status_code == 401
    revoke_row = AuditLog.objects.get(action="token.revoke")
    assert len(revoke_row.changes["keys_revoked"]) == 2
    assert AuditLog.objects.filter(action="apikey.revoke", tenant=tenant).count() == 2


def test_revoking_without_keys_leaves_them(tenant: Any, make_member: Any, client_for: Any) -> None:
    owner = make_member(Role.OWNER, tenant)
    token = AccessTokenFactory(user=owner, scopes=["admin"])
    key = bearer(token.secret).post("/api/v1/keys/", {"name": "ci"}, format="json").json()["id"]
    assert client_for(owner).post(f"/api/v1/tokens/{token.pk}/revoke/").status_code == 200
    assert ApiKey.objects.get(pk=key).revoked_at is None


# ----------------------------------------------------------------------------- audit visibility


def test_token_audit_rows_reach_the_owners_tenants_and_platform_admins(
    tenant: Any, make_member: Any, client_for: Any
) -> None:
    member = make_member(Role.VIEWER, tenant)
    session = client_for(member)
    created = session.post("/api/v1/tokens/", {"name": "ci"}, format="json").json()
    session.post(f"/api/v1/tokens/{created['id']}/revoke/")

    auditor = make_member(Role.ADMIN, tenant)
    seen = rows(client_for(auditor).get("/api/v1/audit/", {"object_type": "accesstoken"}))
    assert sorted(r["action"] for r in seen) == ["token.create", "token.revoke"]
    assert all(r["tenant"] is None and r["actor"] == member.username for r in seen)
    assert len(rows(client_for(auditor).get("/api/v1/audit/", {"tenant": tenant.slug, "action": "token.create"}))) == 1

    stranger = make_member(Role.OWNER, TenantFactory())
    assert rows(client_for(stranger).get("/api/v1/audit/", {"object_type": "accesstoken"})) == []

    platform = client_for(PlatformAdminFactory())
    assert {r["action"] for r in rows(platform.get("/api/v1/audit/", {"object_type": "accesstoken"}))} == {
        "token.create",
        "token.revoke",
    }


def test_rows_from_before_a_user_joined_stay_with_their_tenants(make_member: Any, client_for: Any) -> None:
    user = UserFactory()
    AccessTokenFactory(user=user)  # before joining any tenant
    later = TenantFactory()
    MembershipFactory(user=user, tenant=later, role=Role.VIEWER)
    auditor = make_member(Role.ADMIN, later)
    assert rows(client_for(auditor).get("/api/v1/audit/", {"action": "token.create"})) == []
