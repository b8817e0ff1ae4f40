"""Tenant quotas through the REST API, with real personal access tokens.

Every resource is refused with a 409 that says what is used, requested and allowed; 0 means
none and null unlimited; create, update, scale, start and autoscale-on are all admitted; stopping
and deleting free quota. The platform endpoint lists, shows and sets quotas and does not exist
for tenant roles. The races run 20 requests at once on real PostgreSQL (one connection per
thread) against a quota that admits N: exactly N pass, and usage never goes over.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from controlplane.audit.models import AuditLog
from controlplane.deployments.choices import DesiredState
from controlplane.deployments.models import Deployment
from controlplane.deployments.quota import RESOURCES, tenant_quota_usage
from controlplane.tenancy.choices import Role
from controlplane.tenancy.models import Tenant
from tests.controlplane.api_mixins import PlatformEndpointTests
from tests.factories import (
    AccessTokenFactory,
    DeploymentFactory,
    MembershipFactory,
    ModelFactory,
    PlatformAdminFactory,
    TargetFactory,
    TenantFactory,
    UserFactory,
)

DEPLOYMENTS = "/api/v1/deployments/"
QUOTAS = "/api/v1/platform/quotas/"
GPU_MB = 16384


def bearer(user: Any) -> APIClient:
    """A client presenting a real personal access token of ``user``."""
    secret = AccessTokenFactory(user=user).secret
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


class Shop:
    """A tenant with an owner, a model and a granted target declaring GPUs of ``GPU_MB``."""

    def __init__(self, **quota: Any) -> None:
        self.tenant = TenantFactory(**{f"quota_{k}": v for k, v in quota.items()})
        self.owner = UserFactory()
        MembershipFactory(user=self.owner, tenant=self.tenant, role=Role.OWNER)
        self.model = ModelFactory(tenant=self.tenant)
        self.target = TargetFactory(tenant=self.tenant, gpu_inventory=[{"id": "0", "memory_mb": GPU_MB}])
        self.api = bearer(self.owner)
        self._n = 0

    def create(self, api: APIClient | None = None, **spec: Any) -> Any:
        self._n += 1
        body = {
            "name": f"d{self._n}",
            "served_model_name": f"d{self._n}",
            "model": self.model.pk,
            "target": self.target.pk,
            "cpus": 0.5,
            "memory_mb": 256,
        }
        return (api or self.api).post(DEPLOYMENTS, body | spec, format="json")

    def usage(self) -> dict[str, Any]:
        return tenant_quota_usage(Tenant.objects.get(pk=self.tenant.pk))


def refused(response: Any) -> dict[str, Any]:
    assert response.status_code == 409, response.content
    body = response.json()
    assert body["code"] == "quota_exceeded", body
    return dict(body["quota"])


@pytest.fixture
def admin_api(db: Any) -> APIClient:
    return bearer(PlatformAdminFactory())


# ----------------------------------------------------------------------------- each resource

# resource -> (spec of each deployment, quota admitting one of them but not two, per-deployment cost)
ONE_FITS: dict[str, tuple[dict[str, Any], float, float]] = {
    # A replica has at most one GPU (no multi-GPU sharding): two replicas take two.
    "gpus": ({"gpus": 1, "replicas": 2, "max_replicas": 2}, 3, 2),
    "gpu_memory_mb": ({"gpus": 1}, GPU_MB + 1000, GPU_MB),
    "cpus": ({"cpus": 1.5}, 2.0, 1.5),
    "memory_mb": ({"memory_mb": 1024}, 1500, 1024),
    "replicas": ({"replicas": 2, "max_replicas": 2}, 3, 2),
    "deployments": ({}, 1, 1),
}


@pytest.mark.django_db
@pytest.mark.parametrize("resource", RESOURCES)
def test_each_resource_is_refused_with_used_requested_allowed(resource: str, sent_tasks: Any) -> None:
    spec, limit, cost = ONE_FITS[resource]
    shop = Shop(**{resource: limit})
    assert shop.create(**spec).status_code == 201
    response = shop.create(**spec)
    assert refused(response) == {resource: {"used": cost, "requested": cost, "allowed": limit}}
    assert resource in response.json()["detail"]
    assert Deployment.objects.filter(tenant=shop.tenant).count() == 1
    assert shop.usage()[resource] == {"used": cost, "allowed": limit}


@pytest.mark.django_db
@pytest.mark.parametrize("resource", RESOURCES)
def test_zero_means_none(resource: str, sent_tasks: Any) -> None:
    spec, _, cost = ONE_FITS[resource]
    shop = Shop(**{resource: 0})
    assert refused(shop.create(**spec)) == {resource: {"used": 0, "requested": cost, "allowed": 0}}
    if resource in ("gpus", "gpu_memory_mb"):  # a deployment without GPUs takes none of them
        assert shop.create(gpus=0).status_code == 201


@pytest.mark.django_db
def test_null_means_unlimited(admin_api: APIClient, sent_tasks: Any) -> None:
    shop = Shop(gpus=1, replicas=1, cpus=1, memory_mb=1, gpu_memory_mb=1, deployments=1)
    big = {"gpus": 1, "replicas": 64, "max_replicas": 64, "cpus": 256, "memory_mb": 4 * 1024 * 1024}
    assert set(refused(shop.create(**big))) == set(RESOURCES) - {"deployments"}
    response = admin_api.patch(f"{QUOTAS}{shop.tenant.slug}/", dict.fromkeys(RESOURCES), format="json")
    assert response.status_code == 200, response.content
    for _ in range(3):
        assert shop.create(**big).status_code == 201
    assert shop.usage()["gpus"] == {"used": 3 * 64, "allowed": None}


# ----------------------------------------------------------------------------- each path


@pytest.mark.django_db
def test_update_of_the_spec_is_admitted(sent_tasks: Any) -> None:
    shop = Shop(gpus=2, replicas=3)
    dep = shop.create(gpus=1, max_replicas=3).json()
    url = f"{DEPLOYMENTS}{dep['id']}/"
    assert refused(shop.api.patch(url, {"replicas": 3}, format="json")) == {
        "gpus": {"used": 1, "requested": 2, "allowed": 2}
    }
    assert shop.api.patch(url, {"replicas": 2}, format="json").status_code == 200
    # Autoscaling on: charged at max_replicas (3), not at the two replicas running now.
    quota = refused(shop.api.patch(url, {"autoscale": True}, format="json"))
    assert quota == {"gpus": {"used": 2, "requested": 1, "allowed": 2}}
    assert shop.api.patch(url, {"gpus": 0, "autoscale": True}, format="json").status_code == 200
    assert shop.usage()["replicas"] == {"used": 3, "allowed": 3}
    body = shop.api.get(url).json()
    assert (body["gpus"], body["autoscale"], body["max_replicas"]) == (0, True, 3)


@pytest.mark.django_db
def test_scale_is_admitted(sent_tasks: Any) -> None:
    shop = Shop(replicas=3)
    dep = shop.create(replicas=1, max_replicas=5).json()
    scale = f"{DEPLOYMENTS}{dep['id']}/scale/"
    assert refused(shop.api.post(scale, {"replicas": 4}, format="json")) == {
        "replicas": {"used": 1, "requested": 3, "allowed": 3}
    }
    assert shop.api.post(scale, {"replicas": 3}, format="json").status_code == 202
    assert shop.api.post(scale, {"replicas": 0}, format="json").status_code == 202  # down is always fine
    assert shop.usage()["replicas"] == {"used": 0, "allowed": 3}


@pytest.mark.django_db
def test_stopping_frees_quota_and_start_is_admitted(sent_tasks: Any) -> None:
    shop = Shop(gpus=2)
    a = shop.create(gpus=1, replicas=2, max_replicas=2).json()
    refused(shop.create(gpus=1))
    assert shop.api.post(f"{DEPLOYMENTS}{a['id']}/stop/").status_code == 202
    assert shop.usage()["gpus"]["used"] == 0
    b = shop.create(gpus=1)
    assert b.status_code == 201, b.content
    assert refused(shop.api.post(f"{DEPLOYMENTS}{a['id']}/start/")) == {
        "gpus": {"used": 1, "requested": 2, "allowed": 2}
    }
    assert Deployment.objects.get(pk=a["id"]).desired_state == DesiredState.STOPPED
    assert shop.api.post(f"{DEPLOYMENTS}{b.json()['id']}/stop/").status_code == 202
    assert shop.api.post(f"{DEPLOYMENTS}{a['id']}/start/").status_code == 202
    assert shop.usage()["gpus"] == {"used": 2, "allowed": 2}


@pytest.mark.django_db
def test_deleting_frees_quota(sent_tasks: Any) -> None:
    shop = Shop(deployments=1, memory_mb=1024)
    a = shop.create(memory_mb=1024).json()
    assert set(refused(shop.create(memory_mb=128))) == {"deployments", "memory_mb"}
    assert shop.api.delete(f"{DEPLOYMENTS}{a['id']}/").status_code == 202
    # The row stays until the reconciler removed the replicas; it no longer counts.
    assert Deployment.objects.filter(pk=a["id"], desired_state=DesiredState.DELETED).exists()
    assert shop.create(memory_mb=1024).status_code == 201


@pytest.mark.django_db
def test_a_quota_lowered_below_usage_still_lets_the_tenant_shrink(admin_api: APIClient, sent_tasks: Any) -> None:
    shop = Shop()
    dep = shop.create(replicas=3, max_replicas=4, gpus=1).json()
    assert admin_api.patch(f"{QUOTAS}{shop.tenant.slug}/", {"replicas": 1}, format="json").status_code == 200
    scale = f"{DEPLOYMENTS}{dep['id']}/scale/"
    assert shop.api.post(scale, {"replicas": 2}, format="json").status_code == 202
    assert shop.api.patch(f"{DEPLOYMENTS}{dep['id']}/", {"gpus": 0}, format="json").status_code == 200
    assert refused(shop.api.post(scale, {"replicas": 3}, format="json")) == {
        "replicas": {"used": 2, "requested": 1, "allowed": 1}
    }


# ----------------------------------------------------------------------------- reading and setting quotas


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.OWNER, Role.VIEWER])
def test_tenant_shows_its_usage_read_only(role: str, sent_tasks: Any) -> None:
    shop = Shop(gpus=4, deployments=None)
    shop.create(gpus=1, replicas=2, max_replicas=2)
    member = UserFactory()
    MembershipFactory(user=member, tenant=shop.tenant, role=role)
    api = bearer(member)
    body = api.get(f"/api/v1/tenants/{shop.tenant.slug}/").json()
    assert body["quota"]["gpus"] == {"used": 2, "allowed": 4}
    assert body["quota"]["deployments"] == {"used": 1, "allowed": None}
    assert set(body["quota"]) == set(RESOURCES)
    listed = api.get("/api/v1/tenants/").json()["results"]
    assert [t["quota"] for t in listed] == [body["quota"]]
    response = shop.api.patch(f"/api/v1/tenants/{shop.tenant.slug}/", {"quota": {"gpus": 99}}, format="json")
    assert response.status_code == 400 and response.json()["quota"] == ["This field is read-only."]


@pytest.mark.django_db
def test_platform_admin_lists_shows_and_sets_quotas(admin_api: APIClient, sent_tasks: Any) -> None:
    shop = Shop(gpus=4)
    shop.create(gpus=1)
    other = TenantFactory()
    listed = {row["tenant"]: row for row in admin_api.get(QUOTAS).json()["results"]}
    assert {shop.tenant.slug, other.slug} <= set(listed)
    assert listed[shop.tenant.slug]["gpus"] == 4 and listed[shop.tenant.slug]["cpus"] is None
    assert listed[shop.tenant.slug]["quota"]["gpus"] == {"used": 1, "allowed": 4}

    url = f"{QUOTAS}{shop.tenant.slug}/"
    response = admin_api.patch(url, {"gpus": 0, "cpus": 2.5, "deployments": 3}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["gpus"], body["cpus"], body["deployments"]) == (0, 2.5, 3)
    assert body["quota"]["gpus"] == {"used": 1, "allowed": 0}  # lowered below usage: allowed, shown
    assert admin_api.get(url).json() == body
    row = AuditLog.objects.get(action="tenant.quota")
    assert row.tenant_id == shop.tenant.pk
    assert row.changes == {"quota_gpus": [4, 0], "quota_cpus": [None, 2.5], "quota_deployments": [None, 3]}
    refused(shop.create(gpus=1))

    for bad in ({"gpus": -1}, {"cpus": "lots"}, {"disks": 2}, {"quota": {}}, {"replicas": 1.5}):
        assert admin_api.patch(url, bad, format="json").status_code == 400, bad
    assert admin_api.get(f"{QUOTAS}no-such-tenant/").status_code == 404
    assert admin_api.put(url, {"gpus": 1}, format="json").status_code == 405
    assert admin_api.delete(url).status_code == 405


@pytest.mark.django_db
def test_platform_quota_list_queries_do_not_grow(admin_api: APIClient) -> None:
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = admin_api.get(QUOTAS, {"limit": 100})
        assert response.status_code == 200
        return len(queries)

    count()  # the token's first use records it; later requests within the minute do not
    for _ in range(2):
        DeploymentFactory(tenant=TenantFactory(quota_gpus=1))
    few = count()
    for _ in range(20):
        DeploymentFactory(tenant=TenantFactory(quota_gpus=1))
    assert count() == few <= 8  # auth, access, platform permission, count, page, usage


class TestPlatformQuotas(PlatformEndpointTests):
    """The platform endpoint contract (roles, staff, anonymous, admins, 405s, list queries)."""

    endpoint = "platform/quotas"
    max_list_queries = 5

    def make(self, tenant: Any) -> Any:
        return tenant

    def update_data(self, obj: Any) -> dict[str, Any]:
        return {"gpus": 3, "cpus": None}

    def detail_url(self, obj: Any, action: str | None = None) -> str:
        return f"{self.url}{obj.slug}/"  # quotas are addressed by tenant slug


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN, Role.OPERATOR, Role.VIEWER, "staff"])
def test_tenant_roles_get_404_on_platform_quotas(role: str) -> None:
    tenant = TenantFactory(quota_gpus=1)
    if role == "staff":  # staff without the platform permission is not a platform admin
        user = UserFactory(is_staff=True)
    else:
        user = UserFactory()
        MembershipFactory(user=user, tenant=tenant, role=role)
    api = bearer(user)
    url = f"{QUOTAS}{tenant.slug}/"
    assert api.get(QUOTAS).status_code == 404
    assert api.get(url).status_code == 404
    assert api.patch(url, {"gpus": None}, format="json").status_code == 404
    tenant.refresh_from_db()
    assert tenant.quota_gpus == 1
    assert APIClient().get(QUOTAS).status_code == 401


@pytest.mark.django_db
def test_tenants_created_by_the_platform_get_default_quotas(admin_api: APIClient, settings: Any) -> None:
    settings.HANGAR_QUOTA_DEFAULTS = dict.fromkeys(RESOURCES, None) | {"gpus": 2, "deployments": 5}
    response = admin_api.post("/api/v1/platform/tenants/", {"name": "Newco"}, format="json")
    assert response.status_code == 201, response.content
    body = admin_api.get(f"{QUOTAS}newco/").json()
    assert (body["gpus"], body["deployments"], body["cpus"]) == (2, 5, None)


# ----------------------------------------------------------------------------- concurrency


def race(calls: list[Callable[[], Any]], watch: Callable[[], float]) -> tuple[list[Any], float, float]:
    """Run ``calls`` at once, one thread and one database connection each, while another thread
    polls ``watch`` (committed usage). Returns the responses, the largest usage seen and the
    wall time."""
    barrier = threading.Barrier(len(calls))
    responses: list[Any] = [None] * len(calls)
    seen = [0.0]
    done = threading.Event()

    def call(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            responses[i] = calls[i]()
        finally:
            connections.close_all()

    def watcher() -> None:
        try:
            while not done.wait(0.005):  # poll committed usage until the requests are answered
                seen[0] = max(seen[0], watch())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    observer = threading.Thread(target=watcher)
    observer.start()
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    wall = time.monotonic() - started
    done.set()
    observer.join(30)
    seen[0] = max(seen[0], watch())
    return responses, seen[0], wall


def report(capsys: Any, text: str) -> None:
    with capsys.disabled():
        print(f"\n[quota race] {text}")


CONCURRENT = 20


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "resource, spec, admits",
    [("deployments", {}, 7), ("gpus", {"gpus": 1}, 3), ("replicas", {"replicas": 2, "max_replicas": 2}, 12)],
)
def test_concurrent_creates_never_overshoot(
    resource: str, spec: dict[str, Any], admits: int, sent_tasks: Any, capsys: Any
) -> None:
    per = spec.get("replicas", 1) if resource == "replicas" else 1
    shop = Shop(**{resource: admits * per})
    clients = [bearer(shop.owner) for _ in range(CONCURRENT)]
    bodies = [
        {
            "name": f"race-{i}",
            "served_model_name": f"race-{i}",
            "model": shop.model.pk,
            "target": shop.target.pk,
            "cpus": 0.5,
            "memory_mb": 256,
        }
        | spec
        for i in range(CONCURRENT)
    ]
    calls = [lambda c=c, b=b: c.post(DEPLOYMENTS, b, format="json") for c, b in zip(clients, bodies, strict=True)]
    responses, seen, wall = race(calls, lambda: float(shop.usage()[resource]["used"] or 0))

    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == admits, statuses
    assert statuses.count(409) == CONCURRENT - admits, statuses
    for r in responses:
        if r.status_code == 409:
            line = refused(r)[resource]
            assert line["allowed"] == admits * per and line["used"] + line["requested"] > line["allowed"]
    final = shop.usage()[resource]
    assert final == {"used": admits * per, "allowed": admits * per}
    assert seen <= admits * per
    assert Deployment.objects.filter(tenant=shop.tenant).count() == admits
    report(
        capsys,
        f"create x{CONCURRENT}, quota {resource}={admits * per}: {statuses.count(201)} created, "
        f"{statuses.count(409)} refused (409), max usage seen {seen:g}/{admits * per}, "
        f"final {final['used']:g}, wall {wall:.2f}s",
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("resource, admits", [("replicas", 5), ("gpus", 9), ("replicas", 0)])
def test_concurrent_scales_never_overshoot(resource: str, admits: int, sent_tasks: Any, capsys: Any) -> None:
    # 20 deployments of 1 replica (1 GPU each); each request scales its own one to 3 (+2).
    limit = CONCURRENT + 2 * admits
    shop = Shop(**{resource: limit})
    deployments = [
        DeploymentFactory(
            tenant=shop.tenant, model=shop.model, target=shop.target, replicas=1, max_replicas=4, gpus=1, cpus=0.5
        )
        for _ in range(CONCURRENT)
    ]
    clients = [bearer(shop.owner) for _ in range(CONCURRENT)]
    calls = [
        lambda c=c, d=d: c.post(f"{DEPLOYMENTS}{d.pk}/scale/", {"replicas": 3}, format="json")
        for c, d in zip(clients, deployments, strict=True)
    ]
    responses, seen, wall = race(calls, lambda: float(shop.usage()[resource]["used"] or 0))

    statuses = [r.status_code for r in responses]
    assert statuses.count(202) == admits, statuses
    assert statuses.count(409) == CONCURRENT - admits, statuses
    final = shop.usage()[resource]
    assert final == {"used": limit, "allowed": limit}
    assert seen <= limit
    scaled = Deployment.objects.filter(tenant=shop.tenant, replicas=3).count()
    assert scaled == admits
    report(
        capsys,
        f"scale x{CONCURRENT} (+2 each), quota {resource}={limit}: {statuses.count(202)} scaled, "
        f"{statuses.count(409)} refused (409), max usage seen {seen:g}/{limit}, final {final['used']:g}, "
        f"wall {wall:.2f}s",
    )
