"""A reusable set of API tests applied to every endpoint (after NetBox's APIViewTestCases).

An endpoint test class names its endpoint (a key of ``API_PERMISSIONS``) and says how to make
one object, what to create and what to change. The mixin then checks, for each role:
list, detail, create, update, delete and every extra action allow or deny exactly as
``API_PERMISSIONS`` × ``ROLE_PERMISSIONS`` say; that members of another tenant can neither
see nor change the object (by id, by filter, in lists); and that the number of queries of a
list does not grow with the number of rows.

Platform endpoints (``/api/v1/platform/...``) get ``PlatformEndpointTests`` instead: 404 for
every tenant role on every operation, 401 for anonymous callers, success for platform admins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from controlplane.tenancy.choices import ROLE_PERMISSIONS, Perm, Role
from tests.controlplane.permission_table import API_PERMISSIONS, PLATFORM, SELF, STAFF
from tests.factories import PlatformAdminFactory, TenantFactory, UserFactory

ROLES = [Role.OWNER.value, Role.ADMIN.value, Role.OPERATOR.value, Role.VIEWER.value]


def allows(role: str, perm: Perm | str) -> bool:
    if perm == SELF:
        return True
    if perm == STAFF:
        return False
    return perm in ROLE_PERMISSIONS[role]


def rows(response: Any) -> list[dict[str, Any]]:
    data = response.json()
    return data["results"] if isinstance(data, dict) and "results" in data else data


def listed_ids(response: Any) -> set[Any]:
    return {row.get("id") for row in rows(response)}


class EndpointTests:
    endpoint: ClassVar[str]
    lookup: ClassVar[str] = "pk"
    create_status: ClassVar[int] = 201
    update_status: ClassVar[int] = 200
    delete_status: ClassVar[int] = 204
    # action -> (HTTP method, body, status on success)
    detail_actions: ClassVar[dict[str, tuple[str, dict[str, Any], int]]] = {}
    list_actions: ClassVar[dict[str, int]] = {}
    max_list_queries: ClassVar[int] = 3
    max_detail_queries: ClassVar[int] = 3
    tmp_path: Path

    @pytest.fixture(autouse=True)
    def _endpoint_setup(self, db: Any, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    # -- hooks

    def make(self, tenant: Any) -> Any:
        raise NotImplementedError

    def make_for(self, tenant: Any, user: Any) -> Any:
        """The object the role tests act on; ``user`` is the caller (for per-user objects)."""
        return self.make(tenant)

    def make_many(self, tenant: Any, count: int, user: Any) -> None:
        for _ in range(count):
            self.make_for(tenant, user)

    def create_data(self, tenant: Any) -> dict[str, Any]:
        raise NotImplementedError

    def update_data(self, obj: Any) -> dict[str, Any]:
        raise NotImplementedError

    def check_updated(self, obj: Any, body: dict[str, Any]) -> None:
        for key, value in self.update_data(obj).items():
            assert body[key] == value, key

    def filters_reaching(self, obj: Any) -> list[dict[str, Any]]:
        """Query parameters that would select ``obj`` if the caller could see it."""
        return [{"tenant": obj.tenant.slug}]

    # -- helpers

    @property
    def perms(self) -> dict[str, Perm | str]:
        return API_PERMISSIONS[self.endpoint]

    @property
    def url(self) -> str:
        return f"/api/v1/{self.endpoint}/"

    def detail_url(self, obj: Any, action: str | None = None) -> str:
        url = f"{self.url}{getattr(obj, self.lookup)}/"
        return f"{url}{action}/" if action else url

    def denied_status(self, role: str) -> int:
        """A member whose role may see the object but not change it gets 403; one who may not
        even see it gets 404, like a stranger."""
        return 403 if allows(role, self.perms["retrieve"]) else 404

    # -- role matrix

    @pytest.mark.parametrize("role", ROLES)
    def test_list_as_role(self, role: str, tenant: Any, make_member: Any, client_for: Any) -> None:
        user = make_member(role, tenant)
        obj = self.make_for(tenant, user)
        response = client_for(user).get(self.url)
        if allows(role, self.perms["list"]):
            assert response.status_code == 200, response.content
            assert obj.pk in listed_ids(response)
        else:
            assert response.status_code == 403, response.content

    @pytest.mark.parametrize("role", ROLES)
    def test_detail_as_role(self, role: str, tenant: Any, make_member: Any, client_for: Any) -> None:
        user = make_member(role, tenant)
        obj = self.make_for(tenant, user)
        response = client_for(user).get(self.detail_url(obj))
        if allows(role, self.perms["retrieve"]):
            assert response.status_code == 200, response.content
            assert response.json()["id"] == obj.pk
        else:
            assert response.status_code == 404, response.content

    @pytest.mark.parametrize("role", ROLES)
    def test_create_as_role(self, role: str, tenant: Any, make_member: Any, client_for: Any) -> None:
        client = client_for(make_member(role, tenant))
        perm = self.perms.get("create")
        if perm is None:
            assert client.post(self.url, {}, format="json").status_code == 405
            return
        if perm == STAFF:  # creating tenants is for staff users, never a tenant role's right
            body = {"name": "Another", "slug": f"another-{role}"}
            assert client.post(self.url, body, format="json").status_code == 403
            return
        response = client.post(self.url, self.create_data(tenant), format="json")
        if allows(role, perm):
            assert response.status_code == self.create_status, response.content
            if perm != SELF:
                assert response.json()["tenant"] == tenant.slug
        else:
            assert response.status_code == 403, response.content

    @pytest.mark.parametrize("role", ROLES)
    def test_update_as_role(self, role: str, tenant: Any, make_member: Any, client_for: Any) -> None:
        user = make_member(role, tenant)
        obj = self.make_for(tenant, user)
        client = client_for(user)
        perm = self.perms.get("update")
        if perm is None:
            assert client.patch(self.detail_url(obj), {}, format="json").status_code == 405
            assert client.put(self.detail_url(obj), {}, format="json").status_code == 405
            return
        response = client.patch(self.detail_url(obj), self.update_data(obj), format="json")
        if allows(role, perm):
            assert response.status_code == self.update_status, response.content
            self.check_updated(obj, response.json())
        else:
            assert response.status_code == self.denied_status(role), response.content
        # PUT is never offered: updates are partial.
        assert client.put(self.detail_url(obj), self.update_data(obj), format="json").status_code == 405

    @pytest.mark.parametrize("role", ROLES)
    def test_delete_as_role(self, role: str, tenant: Any, make_member: Any, client_for: Any) -> None:
        user = make_member(role, tenant)
        obj = self.make_for(tenant, user)
        client = client_for(user)
        perm = self.perms.get("delete")
        response = client.delete(self.detail_url(obj))
        if perm is None:
            assert response.status_code == 405
        elif allows(role, perm):
            assert response.status_code == self.delete_status, response.content
        else:
            assert response.status_code == self.denied_status(role), response.content

    @pytest.mark.parametrize("role", ROLES)
    def test_action_as_role(
        self, role: str, action_name: str | None, tenant: Any, make_member: Any, client_for: Any
    ) -> None:
        if action_name is None:
            pytest.skip("no extra actions")
        method, body, ok = self.detail_actions[action_name]
        user = make_member(role, tenant)
        obj = self.make_for(tenant, user)
        client = client_for(user)
        response = getattr(client, method)(self.detail_url(obj, action_name), body, format="json")
        if allows(role, self.perms[action_name]):
            assert response.status_code == ok, response.content
        else:
            assert response.status_code == self.denied_status(role), response.content

    @pytest.mark.parametrize("role", ROLES)
    def test_list_action_as_role(
        self, role: str, list_action_name: str | None, tenant: Any, make_member: Any, client_for: Any
    ) -> None:
        if list_action_name is None:
            pytest.skip("no list actions")
        self.make(tenant)
        response = client_for(make_member(role, tenant)).get(f"{self.url}{list_action_name}/")
        if allows(role, self.perms[list_action_name]):
            assert response.status_code == self.list_actions[list_action_name], response.content
        else:
            assert response.status_code == 403, response.content

    def test_anonymous_is_refused(self, tenant: Any) -> None:
        obj = self.make(tenant)
        client = APIClient(REMOTE_ADDR="127.0.0.1")
        assert client.get(self.url).status_code == 401
        assert client.get(self.detail_url(obj)).status_code == 401

    # -- two-tenant isolation

    def _stranger(self, make_member: Any, client_for: Any) -> tuple[Any, Any, APIClient]:
        a, b = TenantFactory(), TenantFactory()
        obj = self.make(a)
        self.make(b)
        return obj, a, client_for(make_member(Role.OWNER, b))

    def test_other_tenant_absent_from_lists(self, make_member: Any, client_for: Any) -> None:
        obj, a, client = self._stranger(make_member, client_for)
        for params in [{}, *self.filters_reaching(obj)]:
            response = client.get(self.url, params)
            assert response.status_code == 200, (params, response.content)
            assert obj.pk not in listed_ids(response), params
        for action in self.list_actions:
            response = client.get(f"{self.url}{action}/", {"tenant": a.slug})
            assert response.status_code == 200
            assert rows(response) == [], action

    def test_other_tenant_detail_is_404(self, make_member: Any, client_for: Any) -> None:
        obj, _, client = self._stranger(make_member, client_for)
        assert client.get(self.detail_url(obj)).status_code == 404

    def test_other_tenant_cannot_change(self, make_member: Any, client_for: Any) -> None:
        obj, _, client = self._stranger(make_member, client_for)
        if "update" in self.perms:
            assert client.patch(self.detail_url(obj), self.update_data(obj), format="json").status_code == 404
        if "delete" in self.perms:
            assert client.delete(self.detail_url(obj)).status_code == 404
        for action, (method, body, _) in self.detail_actions.items():
            response = getattr(client, method)(self.detail_url(obj, action), body, format="json")
            assert response.status_code == 404, (action, response.content)

    def test_create_in_other_tenant_is_refused(self, make_member: Any, client_for: Any) -> None:
        # Collected only for tenant-scoped creates (see conftest.pytest_collection_modifyitems).
        a, b = TenantFactory(), TenantFactory()
        client = client_for(make_member(Role.OWNER, b))
        response = client.post(self.url, self.create_data(a), format="json")
        assert response.status_code == 400, response.content
        assert "tenant" in response.json()["errors"]

    # -- bounded queries

    def test_list_query_count_does_not_grow(
        self, tenant: Any, make_member: Any, client_for: Any, django_assert_max_num_queries: Any
    ) -> None:
        user = make_member(Role.OWNER, tenant)
        client = client_for(user)
        self.make_many(tenant, 3, user)
        with CaptureQueriesContext(connection) as small:
            response = client.get(self.url, {"limit": 100})
        assert response.status_code == 200 and len(rows(response)) >= 3
        self.make_many(tenant, 27, user)
        with django_assert_max_num_queries(self.max_list_queries), CaptureQueriesContext(connection) as large:
            response = client.get(self.url, {"limit": 100})
        assert response.status_code == 200 and len(rows(response)) >= 30
        assert len(large) == len(small), [q["sql"] for q in large.captured_queries]

    def test_detail_query_count(
        self, tenant: Any, make_member: Any, client_for: Any, django_assert_max_num_queries: Any
    ) -> None:
        user = make_member(Role.OWNER, tenant)
        obj = self.make_for(tenant, user)
        client = client_for(user)
        with django_assert_max_num_queries(self.max_detail_queries):
            assert client.get(self.detail_url(obj)).status_code == 200


class PlatformEndpointTests:
    """The contract of a platform endpoint (``/api/v1/platform/...``), from ``API_PERMISSIONS``:
    every operation answers 404 to every tenant role (even on objects of their own tenant) and to
    staff without the platform permission, 401 to anonymous callers, and works for platform
    admins; operations the table lacks answer 405; a list's query count does not grow.

    A test class names its ``endpoint`` (``"platform/<thing>"``) and says how to make an object
    (``make(tenant)``: one that concerns ``tenant``, e.g. a target granted to it), what to create
    and what to change.
    """

    endpoint: ClassVar[str]
    create_status: ClassVar[int] = 201
    update_status: ClassVar[int] = 200
    delete_status: ClassVar[int] = 204
    # action -> (HTTP method, body, status on success)
    detail_actions: ClassVar[dict[str, tuple[str, dict[str, Any], int]]] = {}
    max_list_queries: ClassVar[int] = 3

    @pytest.fixture(autouse=True)
    def _endpoint_setup(self, db: Any) -> None:
        assert set(self.detail_actions) <= set(self.perms), "every action must be in API_PERMISSIONS"

    # -- hooks

    def make(self, tenant: Any) -> Any:
        raise NotImplementedError

    def create_data(self, tenant: Any) -> dict[str, Any]:
        raise NotImplementedError

    def update_data(self, obj: Any) -> dict[str, Any]:
        raise NotImplementedError

    def check_updated(self, obj: Any, body: dict[str, Any]) -> None:
        for key, value in self.update_data(obj).items():
            assert body[key] == value, key

    # -- helpers

    @property
    def perms(self) -> dict[str, Perm | str]:
        return API_PERMISSIONS[self.endpoint]

    @property
    def url(self) -> str:
        return f"/api/v1/{self.endpoint}/"

    def detail_url(self, obj: Any, action: str | None = None) -> str:
        url = f"{self.url}{obj.pk}/"
        return f"{url}{action.replace('_', '-')}/" if action else url

    def operations(self, obj: Any, tenant: Any) -> list[tuple[str, str, str, Any]]:
        """(operation, method, url, body) of every operation the table lists, deletion last."""
        plain = {
            "list": ("get", self.url, None),
            "retrieve": ("get", self.detail_url(obj), None),
            "create": ("post", self.url, None),
            "update": ("patch", self.detail_url(obj), None),
        }
        found = []
        for operation in self.perms:
            assert self.perms[operation] == PLATFORM, (self.endpoint, operation)
            if operation in plain:
                method, url, body = plain[operation]
                if operation == "create":
                    body = self.create_data(tenant)
                elif operation == "update":
                    body = self.update_data(obj)
                found.append((operation, method, url, body))
            elif operation in self.detail_actions:
                method, body, _ = self.detail_actions[operation]
                found.append((operation, method, self.detail_url(obj, operation), body))
            elif operation != "delete":
                raise AssertionError(f"{self.endpoint}: say how to call {operation!r} (detail_actions)")
        if "delete" in self.perms:
            found.append(("delete", "delete", self.detail_url(obj), None))
        return found

    def expected(self, operation: str) -> int:
        if operation in self.detail_actions:
            return self.detail_actions[operation][2]
        return {"create": self.create_status, "update": self.update_status, "delete": self.delete_status}.get(
            operation, 200
        )

    # -- who reaches it

    @pytest.mark.parametrize("role", ROLES)
    def test_tenant_role_gets_404_everywhere(self, role: str, tenant: Any, make_member: Any, client_for: Any) -> None:
        user = make_member(role, tenant)
        obj = self.make(tenant)
        client = client_for(user)
        for operation, method, url, body in self.operations(obj, tenant):
            response = getattr(client, method)(url, body, format="json")
            assert response.status_code == 404, (role, operation, response.content)
        assert type(obj).objects.filter(pk=obj.pk).exists()

    def test_staff_without_the_platform_permission_gets_404(
        self, tenant: Any, make_member: Any, client_for: Any
    ) -> None:
        user = make_member(Role.OWNER, tenant)
        user.is_staff = True
        user.save()
        obj = self.make(tenant)
        client = client_for(user)
        for operation, method, url, body in self.operations(obj, tenant):
            assert getattr(client, method)(url, body, format="json").status_code == 404, operation

    def test_anonymous_is_refused(self, tenant: Any) -> None:
        obj = self.make(tenant)
        client = APIClient(REMOTE_ADDR="127.0.0.1")
        for operation, method, url, body in self.operations(obj, tenant):
            assert getattr(client, method)(url, body, format="json").status_code == 401, operation

    @pytest.mark.parametrize("superuser", [False, True], ids=["staff-with-permission", "superuser"])
    def test_platform_admin_may_do_everything(self, superuser: bool, tenant: Any, client_for: Any) -> None:
        admin = UserFactory(is_superuser=True, is_staff=True) if superuser else PlatformAdminFactory()
        obj = self.make(tenant)
        client = client_for(admin)
        for operation, method, url, body in self.operations(obj, tenant):
            response = getattr(client, method)(url, body, format="json")
            assert response.status_code == self.expected(operation), (operation, response.content)
            if operation == "list":
                assert obj.pk in listed_ids(response)
            elif operation == "retrieve":
                assert response.json()["id"] == obj.pk
            elif operation == "update":
                self.check_updated(obj, response.json())
        if "delete" in self.perms:
            assert not type(obj).objects.filter(pk=obj.pk).exists()

    def test_operations_not_in_the_table_answer_405(self, tenant: Any, client_for: Any) -> None:
        obj = self.make(tenant)
        client = client_for(PlatformAdminFactory())
        assert client.put(self.detail_url(obj), {}, format="json").status_code == 405  # updates are PATCH
        if "create" not in self.perms:
            assert client.post(self.url, {}, format="json").status_code == 405
        if "update" not in self.perms:
            assert client.patch(self.detail_url(obj), {}, format="json").status_code == 405
        if "delete" not in self.perms:
            assert client.delete(self.detail_url(obj)).status_code == 405

    def test_list_query_count_does_not_grow(self, client_for: Any, django_assert_max_num_queries: Any) -> None:
        client = client_for(PlatformAdminFactory())
        for _ in range(3):
            self.make(TenantFactory())
        client.get(self.url)  # the admin's permissions are loaded once, then cached on the user
        with CaptureQueriesContext(connection) as small:
            response = client.get(self.url, {"limit": 100})
        assert response.status_code == 200 and len(rows(response)) >= 3
        for _ in range(12):
            self.make(TenantFactory())
        with django_assert_max_num_queries(self.max_list_queries), CaptureQueriesContext(connection) as large:
            response = client.get(self.url, {"limit": 100})
        assert response.status_code == 200 and len(rows(response)) >= 15
        assert len(large) == len(small), [q["sql"] for q in large.captured_queries]
