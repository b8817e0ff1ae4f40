"""Tenants and members endpoints."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.tenancy.choices import Role
from controlplane.tenancy.models import Membership, Tenant
from tests.controlplane.api_mixins import EndpointTests, rows
from tests.factories import DeploymentFactory, MembershipFactory, TenantFactory, UserFactory


class TestTenants(EndpointTests):
    endpoint = "tenants"
    lookup = "slug"
    max_list_queries = 4  # one more than the others: the quota usage of the whole page

    def make(self, tenant: Any) -> Any:
        return tenant

    def make_many(self, tenant: Any, count: int, user: Any) -> None:
        for _ in range(count):
            MembershipFactory(user=user, tenant=TenantFactory(), role=Role.VIEWER)

    def update_data(self, obj: Any) -> dict[str, Any]:
        return {"name": "Renamed", "rpm_limit": 600}

    def filters_reaching(self, obj: Any) -> list[dict[str, Any]]:
        return []


@pytest.mark.django_db
class TestTenantRules:
    def test_tenants_are_created_on_the_platform_endpoint_only(self, make_member: Any, client_for: Any) -> None:
        # One way to create a tenant: POST /api/v1/platform/tenants/ (tests/controlplane/tenancy/test_api_platform_accounts.py).
        admin = UserFactory(is_superuser=True, is_staff=True)
        for user in (admin, make_member(Role.OWNER)):
            response = client_for(user).post("/api/v1/tenants/", {"name": "x"}, format="json")
            assert response.status_code == 405, response.content
        assert not Tenant.objects.filter(name="x").exists()

    def test_tenant_with_deployments_cannot_be_deleted(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        DeploymentFactory(tenant=tenant)
        response = client_for(make_member(Role.OWNER, tenant)).delete(f"/api/v1/tenants/{tenant.slug}/")
        assert response.status_code == 409
        assert Tenant.objects.filter(pk=tenant.pk).exists()

    def test_slug_is_read_only(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        response = client_for(make_member(Role.OWNER, tenant)).patch(
            f"/api/v1/tenants/{tenant.slug}/", {"slug": "new"}, format="json"
        )
        assert response.status_code == 400
        assert response.json()["errors"] == {"slug": ["This field is read-only."]}


class TestMembers(EndpointTests):
    endpoint = "members"

    def make(self, tenant: Any) -> Any:
        return MembershipFactory(tenant=tenant, role=Role.VIEWER)

    def create_data(self, tenant: Any) -> dict[str, Any]:
        return {"tenant": tenant.slug, "username": UserFactory().username, "role": "viewer"}

    def update_data(self, obj: Any) -> dict[str, Any]:
        return {"role": "operator"}

    def filters_reaching(self, obj: Any) -> list[dict[str, Any]]:
        return [{"tenant": obj.tenant.slug}, {"tenant": obj.tenant.slug, "role": "viewer"}]


@pytest.mark.django_db
class TestMemberRules:
    def test_admin_cannot_grant_owner(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        client = client_for(make_member(Role.ADMIN, tenant))
        data = {"tenant": tenant.slug, "username": UserFactory().username, "role": "owner"}
        assert client.post("/api/v1/members/", data, format="json").status_code == 403

    def test_last_owner_cannot_leave(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        owner = make_member(Role.OWNER, tenant)
        membership = Membership.objects.get(user=owner, tenant=tenant)
        response = client_for(owner).patch(f"/api/v1/members/{membership.pk}/", {"role": "viewer"}, format="json")
        assert response.status_code == 409

    def test_unknown_user_and_role_are_field_errors(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        client = client_for(make_member(Role.OWNER, tenant))
        response = client.post("/api/v1/members/", {"username": "nobody", "role": "viewer"}, format="json")
        assert response.status_code == 400 and "username" in response.json()["errors"]
        response = client.post("/api/v1/members/", {"username": "x", "role": "god"}, format="json")
        assert response.status_code == 400 and "role" in response.json()["errors"]

    def test_tenant_defaults_only_when_unambiguous(self, make_member: Any, client_for: Any) -> None:
        a, b = TenantFactory(), TenantFactory()
        user = make_member(Role.OWNER, a)
        MembershipFactory(user=user, tenant=b, role=Role.OWNER)
        response = client_for(user).post(
            "/api/v1/members/", {"username": UserFactory().username, "role": "viewer"}, format="json"
        )
        assert response.status_code == 400
        assert response.json()["errors"] == {"tenant": ["This field is required."]}

    def test_list_shows_usernames(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        user = make_member(Role.VIEWER, tenant, username="alice")
        names = {row["username"] for row in rows(client_for(user).get("/api/v1/members/"))}
        assert names == {"alice"}
