"""Platform endpoints for tenants and users: every action, as a platform admin with a token;
tenant roles never see them; deactivated users and tenants really stop working."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client
from hypothesis import given
from rest_framework.test import APIClient

from controlplane.audit.models import AuditLog
from controlplane.core.context import SYSTEM
from controlplane.tenancy import services
from controlplane.tenancy.access import access_for, is_platform_admin
from controlplane.tenancy.choices import Role
from controlplane.tenancy.models import Membership, Tenant
from tests.controlplane.api_mixins import PlatformEndpointTests
from tests.controlplane.core.test_api_fuzz import FUZZ, bodies, send
from tests.factories import (
    AccessTokenFactory,
    ApiKeyFactory,
    MembershipFactory,
    PlatformAdminFactory,
    TenantFactory,
    UserFactory,
)
from tests.support.logins import log_in
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.django_db

TENANTS = "/api/v1/platform/tenants/"
USERS = "/api/v1/platform/users/"
PASSWORD = "pw-for-tests-1"


def bearer(user: Any) -> APIClient:
    """A client presenting a real personal access token of ``user`` (no forced authentication)."""
    secret = AccessTokenFactory(user=user).secret
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def admin() -> Any:
    return PlatformAdminFactory()


@pytest.fixture
def api(admin: Any) -> APIClient:
    return bearer(admin)


def audit_rows(action: str) -> list[AuditLog]:
    return list(AuditLog.objects.filter(action=action))


# ----------------------------------------------------------------------------- who reaches them


class TestPlatformTenants(PlatformEndpointTests):
    endpoint = "platform/tenants"
    detail_actions = {"deactivate": ("post", {}, 200), "activate": ("post", {}, 200)}

    def make(self, tenant: Any) -> Any:
        return tenant

    def create_data(self, tenant: Any) -> dict[str, Any]:
        return {"name": "Another", "slug": f"another-{tenant.pk}"}

    def update_data(self, obj: Any) -> dict[str, Any]:
        return {"name": "Renamed", "rpm_limit": 60}


class TestPlatformUsers(PlatformEndpointTests):
    endpoint = "platform/users"
    max_list_queries = 4  # memberships of the caller, count, users, their memberships
    detail_actions = {
        "deactivate": ("post", {}, 200),
        "activate": ("post", {}, 200),
        "reset_password": ("post", {}, 200),
        "platform_admin": ("post", {"platform_admin": True}, 200),
    }

    def make(self, tenant: Any) -> Any:
        return MembershipFactory(tenant=tenant, role=Role.VIEWER).user

    def create_data(self, tenant: Any) -> dict[str, Any]:
        return {"username": f"new-user-{tenant.pk}"}


def test_tenant_owner_token_changes_nothing_on_the_platform(tenant: Tenant, make_member: Any) -> None:
    """The mixin's 404s, with a real token, and the state checked afterwards."""
    owner = make_member(Role.OWNER, tenant)
    client = bearer(owner)
    for method, url, body in (
        ("post", TENANTS, {"name": "Mine"}),
        ("post", f"{TENANTS}{tenant.pk}/deactivate/", None),
        ("post", USERS, {"username": "sneaky"}),
        ("post", f"{USERS}{owner.pk}/platform-admin/", {"platform_admin": True}),
        ("post", f"{USERS}{owner.pk}/reset-password/", None),
    ):
        assert getattr(client, method)(url, body, format="json").status_code == 404, url
    owner.refresh_from_db()
    tenant.refresh_from_db()
    assert tenant.is_active and not is_platform_admin(owner) and owner.check_password(PASSWORD)
    assert not Tenant.objects.filter(name="Mine").exists()
    assert not get_user_model().objects.filter(username="sneaky").exists()


# ----------------------------------------------------------------------------- tenants


def test_create_tenant_with_first_owner_and_limits(api: APIClient) -> None:
    owner = UserFactory(username="olga")
    response = api.post(TENANTS, {"name": "Acme Labs", "owner": "olga", "tpm_limit": 5}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["slug"] == "acme-labs" and body["tpm_limit"] == 5 and body["is_active"] is True
    assert body["member_count"] == 1
    assert Membership.objects.get(tenant__slug="acme-labs").user == owner
    assert Membership.objects.get(tenant__slug="acme-labs").role == Role.OWNER
    assert audit_rows("tenant.create")[0].changes["owner"] == "olga"


def test_create_tenant_without_owner_has_no_members(api: APIClient, admin: Any) -> None:
    response = api.post(TENANTS, {"name": "Empty", "slug": "empty"}, format="json")
    assert response.status_code == 201, response.content
    assert not Membership.objects.filter(tenant__slug="empty").exists()  # the platform admin is not a member


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "S", "slug": "_shared"}, "slug"),
        ({"name": "S", "slug": "_mine"}, "slug"),
        ({"name": "S", "slug": "Not A Slug"}, "slug"),
        ({"name": "S", "owner": "nobody-by-this-name"}, "owner"),
        ({"name": "   "}, "name"),
        ({"name": "S", "is_active": False}, "is_active"),
    ],
)
def test_create_tenant_refuses_bad_input(api: APIClient, body: dict[str, Any], field: str) -> None:
    response = api.post(TENANTS, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert not Tenant.objects.exists()


def test_duplicate_slug_is_a_field_error(api: APIClient, tenant: Tenant) -> None:
    response = api.post(TENANTS, {"name": "x", "slug": tenant.slug}, format="json")
    assert response.status_code == 400 and "slug" in response.json()["errors"]


def test_list_shows_every_tenant_including_inactive(api: APIClient) -> None:
    active, inactive = TenantFactory(), TenantFactory(is_active=False)
    response = api.get(TENANTS)
    assert response.status_code == 200
    assert {row["slug"] for row in response.json()["results"]} == {active.slug, inactive.slug}
    only_inactive = api.get(TENANTS, {"is_active": "false"}).json()["results"]
    assert [row["slug"] for row in only_inactive] == [inactive.slug]
    assert api.get(f"{TENANTS}{inactive.pk}/").json()["is_active"] is False


def test_patch_name_and_limits_only(api: APIClient, tenant: Tenant) -> None:
    response = api.patch(f"{TENANTS}{tenant.pk}/", {"name": "Renamed", "rpm_limit": 60}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["name"] == "Renamed" and response.json()["rpm_limit"] == 60
    assert response.json()["burst_percent"] == 0  # no burst unless set explicitly
    response = api.patch(f"{TENANTS}{tenant.pk}/", {"burst_percent": 20}, format="json")
    assert response.status_code == 200 and response.json()["burst_percent"] == 20
    assert api.patch(f"{TENANTS}{tenant.pk}/", {"burst_percent": 101}, format="json").status_code == 400
    for read_only in ({"slug": "other"}, {"is_active": False}):
        response = api.patch(f"{TENANTS}{tenant.pk}/", read_only, format="json")
        assert response.status_code == 400
        assert list(response.json()["errors"].values()) == [["This field is read-only."]]
    tenant.refresh_from_db()
    assert tenant.slug != "other" and tenant.is_active


def test_deactivated_tenant_disappears_for_its_members_and_comes_back(
    api: APIClient, tenant: Tenant, make_member: Any
) -> None:
    owner = make_member(Role.OWNER, tenant)
    member = bearer(owner)
    assert member.get(f"/api/v1/tenants/{tenant.slug}/").status_code == 200

    response = api.post(f"{TENANTS}{tenant.pk}/deactivate/")
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert tenant.pk not in access_for(owner).roles
    assert member.get(f"/api/v1/tenants/{tenant.slug}/").status_code == 404
    assert member.get("/api/v1/tenants/").status_code == 200
    assert member.get("/api/v1/tenants/").json()["results"] == []
    assert member.post("/api/v1/keys/", {"name": "k", "tenant": tenant.slug}, format="json").status_code == 400
    assert api.post(f"{TENANTS}{tenant.pk}/deactivate/").status_code == 200  # idempotent: one audit row
    assert len(audit_rows("tenant.deactivate")) == 1

    assert api.post(f"{TENANTS}{tenant.pk}/activate/").json()["is_active"] is True
    assert member.get(f"/api/v1/tenants/{tenant.slug}/").status_code == 200
    assert len(audit_rows("tenant.activate")) == 1


def test_deactivated_tenant_is_gone_from_the_dashboard_too(admin: Any, tenant: Tenant, make_member: Any) -> None:
    client = Client()
    client.force_login(make_member(Role.OWNER, tenant))
    assert client.get("/").status_code == 200
    services.tenant_deactivate(actor=SYSTEM, tenant=tenant)
    assert client.get("/").status_code == 403  # "you are not a member of any tenant"


def _gateway_scenario(token: str, other_token: str, tenant: Tenant) -> list[Any]:
    """Call the gateway's ASGI app in this process: a key works, then the tenant is deactivated
    (the cached key must be dropped), then reactivated. Returns the statuses seen."""
    from controlplane.gateway.app import Gateway

    async def scenario() -> list[Any]:
        gateway = Gateway()
        await gateway.startup()
        seen: list[Any] = []
        try:
            await asyncio.wait_for(gateway.revocations_ready.wait(), 10)
            transport = httpx.ASGITransport(app=gateway)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                headers = {"Authorization": f"Bearer {token}"}

                async def expect_status(status: int) -> None:
                    async def answered() -> int | None:
                        code = (await client.get("/v1/models", headers=headers)).status_code
                        return code if code == status else None

                    seen.append(await wait_for_async(answered, 20, f"/v1/models answering {status}", interval=0.05))

                seen.append((await client.get("/v1/models", headers=headers)).status_code)  # cached now
                await sync_to_async(services.tenant_deactivate)(actor=SYSTEM, tenant=tenant)
                await expect_status(401)  # the announcement purged the cached key, well before its TTL
                others = {"Authorization": f"Bearer {other_token}"}
                seen.append((await client.get("/v1/models", headers=others)).status_code)  # other tenants unaffected
                fresh = Gateway()  # a process that never saw the key refuses it from the database
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fresh), base_url="http://g") as other:
                    refused = await other.get("/v1/models", headers=headers)
                    seen.append(refused.status_code)
                    seen.append(refused.json()["error"]["code"])
                await fresh.shutdown()
                await sync_to_async(services.tenant_activate)(actor=SYSTEM, tenant=tenant)
                await expect_status(200)  # the negative cache entry expires in seconds
        finally:
            await gateway.shutdown()
        return seen

    return async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)  # deactivation announces the revocation after commit
def test_deactivated_tenant_keys_are_refused_by_the_gateway() -> None:
    tenant = TenantFactory()
    other_tenant = TenantFactory()
    token = ApiKeyFactory(tenant=tenant, name="k").secret
    other_token = ApiKeyFactory(tenant=other_tenant, name="k").secret
    assert _gateway_scenario(token, other_token, tenant) == [200, 401, 200, 401, "invalid_api_key", 200]


# ----------------------------------------------------------------------------- users


def test_create_user_with_generated_password_shown_once(api: APIClient) -> None:
    response = api.post(USERS, {"username": "nina", "email": "nina@example.com"}, format="json")
    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    password = body["password"]
    assert len(password) >= 20 and body["username"] == "nina" and body["is_platform_admin"] is False
    user = get_user_model().objects.get(username="nina")
    assert user.check_password(password) and user.is_active and not user.is_staff
    assert "password" not in api.get(f"{USERS}{user.pk}/").json()
    row = audit_rows("user.create")[0]
    assert password not in str(row.changes) and row.changes == {"username": "nina", "email": "nina@example.com"}
    assert log_in(Client(), "nina", password)


def test_create_user_with_chosen_password_does_not_echo_it(api: APIClient) -> None:
    chosen = "a-long-chosen-passphrase-42"
    response = api.post(USERS, {"username": "omar", "password": chosen}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["password"] == "" and chosen not in response.content.decode()
    assert get_user_model().objects.get(username="omar").check_password(chosen)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "weak", "password": "123"}, "password"),
        ({"username": "bad name!"}, "username"),
        ({"username": "ok", "email": "not-an-email"}, "email"),
        ({"username": "ok", "is_staff": True}, "is_staff"),
    ],
)
def test_create_user_refuses_bad_input(api: APIClient, body: dict[str, Any], field: str) -> None:
    response = api.post(USERS, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert "123" not in str(response.json()["errors"].get("password", ""))


def test_duplicate_username_is_a_field_error(api: APIClient) -> None:
    UserFactory(username="taken")
    response = api.post(USERS, {"username": "TAKEN"}, format="json")
    assert response.status_code == 400 and "username" in response.json()["errors"]


def test_list_users_with_their_tenants_in_bounded_queries(
    api: APIClient, admin: Any, tenant: Tenant, django_assert_max_num_queries: Any
) -> None:
    for _ in range(5):
        MembershipFactory(tenant=tenant, role=Role.VIEWER)
    with django_assert_max_num_queries(8):
        response = api.get(USERS)
    rows = response.json()["results"]
    assert len(rows) == 6
    mine = next(row for row in rows if row["username"] == admin.username)
    assert mine["is_platform_admin"] is True and mine["memberships"] == []
    other = next(row for row in rows if row["username"] != admin.username)
    assert other["memberships"] == [{"tenant": tenant.slug, "role": "viewer"}]
    assert other["is_platform_admin"] is False


def test_deactivated_user_token_and_session_stop_working(api: APIClient, tenant: Tenant, make_member: Any) -> None:
    user = make_member(Role.OWNER, tenant)
    with_token = bearer(user)
    session = Client()
    assert log_in(session, user.username, PASSWORD)
    assert with_token.get("/api/v1/tenants/").status_code == 200
    assert session.get("/api/v1/tenants/").status_code == 200
    assert session.get("/").status_code == 200

    response = api.post(f"{USERS}{user.pk}/deactivate/")
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert with_token.get("/api/v1/tenants/").status_code == 401
    assert session.get("/api/v1/tenants/").status_code == 401
    assert session.get("/").status_code == 302  # back to the login page
    assert not log_in(Client(), user.username, PASSWORD)
    assert [r.object_id for r in audit_rows("user.deactivate")] == [str(user.pk)]

    assert api.post(f"{USERS}{user.pk}/activate/").json()["is_active"] is True
    assert with_token.get("/api/v1/tenants/").status_code == 200


def test_reset_password_is_shown_once_and_ends_sessions(api: APIClient, make_member: Any) -> None:
    user = make_member(Role.VIEWER)
    session = Client()
    assert log_in(session, user.username, PASSWORD)
    response = api.post(f"{USERS}{user.pk}/reset-password/")
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    password = response.json()["password"]
    user.refresh_from_db()
    assert user.check_password(password) and not user.check_password(PASSWORD)
    assert session.get("/api/v1/tenants/").status_code == 401
    row = audit_rows("user.reset_password")[0]
    assert password not in str(row.changes) and user.password not in str(row.changes)


def test_platform_admin_grant_and_removal(api: APIClient) -> None:
    user = UserFactory()
    response = api.post(f"{USERS}{user.pk}/platform-admin/", {"platform_admin": True}, format="json")
    assert response.status_code == 200 and response.json()["is_platform_admin"] is True
    promoted = get_user_model().objects.get(pk=user.pk)
    assert promoted.is_staff and is_platform_admin(promoted)
    assert bearer(promoted).get(TENANTS).status_code == 200  # the new admin reaches the platform

    response = api.post(f"{USERS}{user.pk}/platform-admin/", {"platform_admin": False}, format="json")
    assert response.status_code == 200 and response.json()["is_platform_admin"] is False
    demoted = get_user_model().objects.get(pk=user.pk)
    assert not demoted.is_staff and not is_platform_admin(demoted)
    assert bearer(demoted).get(TENANTS).status_code == 404
    changes = [r.changes for r in AuditLog.objects.filter(action="user.platform_admin").order_by("pk")]
    assert changes == [{"platform_admin": [False, True]}, {"platform_admin": [True, False]}]


def test_platform_admin_body_is_required(api: APIClient) -> None:
    user = UserFactory()
    response = api.post(f"{USERS}{user.pk}/platform-admin/", {}, format="json")
    assert response.status_code == 400 and "platform_admin" in response.json()["errors"]


def test_nobody_locks_themselves_out(api: APIClient, admin: Any) -> None:
    assert api.post(f"{USERS}{admin.pk}/deactivate/").status_code == 409
    response = api.post(f"{USERS}{admin.pk}/platform-admin/", {"platform_admin": False}, format="json")
    assert response.status_code == 409
    admin = get_user_model().objects.get(pk=admin.pk)
    assert admin.is_active and is_platform_admin(admin)
    assert api.get(USERS).status_code == 200


def test_only_superusers_change_superusers(api: APIClient) -> None:
    root = UserFactory(is_superuser=True, is_staff=True)
    for url, body in (
        (f"{USERS}{root.pk}/deactivate/", None),
        (f"{USERS}{root.pk}/reset-password/", None),
        (f"{USERS}{root.pk}/platform-admin/", {"platform_admin": False}),
    ):
        assert api.post(url, body, format="json").status_code == 403, url
    root.refresh_from_db()
    assert root.is_active and root.is_superuser and root.check_password(PASSWORD)
    other_root = UserFactory(is_superuser=True, is_staff=True)
    assert bearer(other_root).post(f"{USERS}{root.pk}/deactivate/").status_code == 200


def test_unknown_ids_are_404(api: APIClient) -> None:
    assert api.get(f"{USERS}999999/").status_code == 404
    assert api.post(f"{TENANTS}999999/deactivate/").status_code == 404


# ----------------------------------------------------------------------------- random input


PLATFORM_WRITES = {
    "tenants": ["name", "slug", "owner", "rpm_limit", "tpm_limit", "monthly_token_budget", "burst_percent"],
    "users": ["username", "email", "password"],
}


@pytest.mark.parametrize("endpoint", list(PLATFORM_WRITES))
def test_platform_create_never_500(endpoint: str, api: APIClient) -> None:
    UserFactory(username="owner1")
    base = {"tenants": {"name": "Fuzz", "owner": "owner1"}, "users": {"username": "fuzz"}}[endpoint]

    @FUZZ
    @given(body=bodies(PLATFORM_WRITES[endpoint], base))
    def check(body: Any) -> None:
        send(api, "post", f"/api/v1/platform/{endpoint}/", body)

    check()


def test_platform_tenant_update_and_admin_flag_never_500(api: APIClient, tenant: Tenant) -> None:
    user = UserFactory()

    @FUZZ
    @given(
        body=bodies(["name", "rpm_limit", "tpm_limit", "monthly_token_budget", "burst_percent"], {}),
        flag=bodies(["platform_admin"], {}),
    )
    def check(body: Any, flag: Any) -> None:
        send(api, "patch", f"{TENANTS}{tenant.pk}/", body)
        send(api, "post", f"{USERS}{user.pk}/platform-admin/", flag)

    check()
