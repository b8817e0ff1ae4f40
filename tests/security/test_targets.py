"""Targets as a hostile tenant owner would attack them through the public API, with a personal
access token (``hgp_...``): no way to create or change a target, to point one at the metadata
service, an HTTP endpoint or the worker's own Docker socket, to read a granted target's
connection settings, or to deploy onto a target not granted to the tenant. And what a platform
admin uploads never comes back: not in any response, not in any audit row."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from controlplane.audit.models import AuditLog
from controlplane.deployments.models import Deployment, Target, TargetGrant
from controlplane.tenancy.choices import Role
from controlplane.tenancy.models import Tenant
from tests.factories import AccessTokenFactory, ModelFactory, PlatformAdminFactory, TargetFactory, TenantFactory
from tests.support.credentials import SECRET, docker_tls, kubeconfig, ssh_private_key

pytestmark = pytest.mark.django_db

WORKER_SOCKET = "unix:///var/run/docker.sock"
HOSTILE_URLS = [
    "tcp://169.254.169.254:80",
    "http://169.254.169.254/latest/meta-data/",
    "https://internal-api.example.com:443",
    WORKER_SOCKET,
    "tcp://127.0.0.1:2375",
]


def bearer(user: Any) -> APIClient:
    secret = AccessTokenFactory(user=user).secret
    assert secret.startswith("hgp_")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def owner_api(tenant: Tenant, make_member: Any) -> APIClient:
    return bearer(make_member(Role.OWNER, tenant))


@pytest.fixture
def platform_api() -> APIClient:
    return bearer(PlatformAdminFactory())


@pytest.fixture
def granted(tenant: Tenant) -> Target:
    return TargetFactory(
        tenant=tenant,
        name="granted",
        kind="docker",
        docker_url="tcp://docker.internal:2376",
        publish_host="10.20.30.40",
        labels={"gpu": "a100"},
        gpu_inventory=[{"id": "0", "memory_mb": 81920}],
    )


def snapshot(target: Target) -> dict[str, Any]:
    target.refresh_from_db()
    return {f.name: getattr(target, f.name) for f in Target._meta.concrete_fields if f.name != "updated_at"}


# ----------------------------------------------------------------------------- a tenant owner


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_owner_cannot_create_a_target_anywhere(owner_api: APIClient, tenant: Tenant, url: str) -> None:
    body = {"tenant": tenant.slug, "name": "mine", "kind": "docker", "docker_url": url}
    assert owner_api.post("/api/v1/targets/", body, format="json").status_code == 405
    assert owner_api.post("/api/v1/platform/targets/", body, format="json").status_code == 404
    assert not Target.objects.filter(name="mine").exists()


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_owner_cannot_repoint_a_granted_target(owner_api: APIClient, granted: Target, url: str) -> None:
    before = snapshot(granted)
    # The platform route hides its objects (404) from tenant roles; PUT is no route's method, so it
    # is a 405 for anyone (the routes are in the public schema: a 405 tells nothing new).
    answers = {
        ("patch", f"/api/v1/targets/{granted.pk}/"): 405,
        ("put", f"/api/v1/targets/{granted.pk}/"): 405,
        ("patch", f"/api/v1/platform/targets/{granted.pk}/"): 404,
        ("put", f"/api/v1/platform/targets/{granted.pk}/"): 405,
    }
    for (method, path), status in answers.items():
        response = getattr(owner_api, method)(path, {"docker_url": url, "publish_host": "0.0.0.0"}, format="json")
        assert response.status_code == status, (method, path, response.content)
    assert owner_api.post(f"/api/v1/targets/{granted.pk}/check/").status_code == 404
    assert owner_api.post(f"/api/v1/platform/targets/{granted.pk}/check/").status_code == 404
    assert owner_api.delete(f"/api/v1/targets/{granted.pk}/").status_code == 405
    assert snapshot(granted) == before


def test_owner_cannot_read_connection_settings_of_a_granted_target(owner_api: APIClient, granted: Target) -> None:
    listed = owner_api.get("/api/v1/targets/")
    shown = owner_api.get(f"/api/v1/targets/{granted.pk}/")
    assert listed.status_code == 200 and shown.status_code == 200
    assert [row["id"] for row in listed.json()["results"]] == [granted.pk]
    for text in (listed.content.decode(), shown.content.decode()):
        for setting in (
            "docker.internal",
            "2376",
            "10.20.30.40",
            "docker_url",
            "publish_host",
            "kube_",
            "model_volume",
        ):
            assert setting not in text, setting
    assert owner_api.get(f"/api/v1/platform/targets/{granted.pk}/").status_code == 404
    assert owner_api.get("/api/v1/platform/targets/").status_code == 404
    assert owner_api.get("/api/v1/platform/grants/").status_code == 404


def test_owner_cannot_grant_a_target_to_their_tenant(owner_api: APIClient, tenant: Tenant) -> None:
    other = TargetFactory(tenant=TenantFactory(), name="theirs")
    response = owner_api.post("/api/v1/platform/grants/", {"target": other.pk, "tenant": tenant.slug}, format="json")
    assert response.status_code == 404
    assert not TargetGrant.objects.filter(target=other, tenant=tenant).exists()
    assert owner_api.get(f"/api/v1/targets/{other.pk}/").status_code == 404
    assert other.pk not in {row["id"] for row in owner_api.get("/api/v1/targets/").json()["results"]}


def test_owner_cannot_deploy_onto_a_target_not_granted(owner_api: APIClient, tenant: Tenant, granted: Target) -> None:
    model = ModelFactory(tenant=tenant)
    others = TargetFactory(tenant=TenantFactory(), name="someone-elses")
    ungranted = TargetFactory(name="nobodys")
    answers = {}
    for target_id in (others.pk, ungranted.pk, 10**9):
        response = owner_api.post(
            "/api/v1/deployments/", {"name": "d", "model": model.pk, "target": target_id}, format="json"
        )
        assert response.status_code == 400, response.content
        answers[target_id] = response.json()["errors"]["target"][0].replace(str(target_id), "<id>")
    # One wording for "not granted to you" and "does not exist": nothing leaks.
    assert len(set(answers.values())) == 1, answers
    assert not Deployment.objects.exists()
    ok = owner_api.post("/api/v1/deployments/", {"name": "d", "model": model.pk, "target": granted.pk}, format="json")
    assert ok.status_code == 201, ok.content


# ----------------------------------------------------------------------------- a platform admin


@pytest.mark.parametrize(
    "url",
    [
        "tcp://x:2375",  # plain TCP: anyone on the path could drive the daemon
        "tcp://user@x:2376",
        "tcp://user:pw@x:2376",
        "tcp://169.254.169.254:2376",
        "tcp://[::ffff:a9fe:a9fe]:2376",
        "http://x:2375",
        "tcp://x:2376/containers/json?all=1",
    ],
)
def test_platform_admin_cannot_set_an_ssrf_url_even_with_tls(platform_api: APIClient, url: str) -> None:
    tls = {} if url == "tcp://x:2375" else docker_tls()
    response = platform_api.post(
        "/api/v1/platform/targets/", {"name": "box", "kind": "docker", "docker_url": url, **tls}, format="json"
    )
    assert response.status_code == 400, response.content
    assert "docker_url" in response.json()["errors"]
    assert not Target.objects.exists()


def test_credentials_never_appear_in_responses_or_audit_rows(
    platform_api: APIClient, owner_api: APIClient, tenant: Tenant
) -> None:
    """Upload every kind of credential, go through every endpoint that could show them, and
    search the whole of each answer and every audit row for the secret's text."""
    answers: list[str] = []

    def keep(response: Any) -> Any:
        assert response.status_code < 400, response.content
        answers.append(response.content.decode())
        return response.json()

    targets = "/api/v1/platform/targets/"
    tls_id = keep(
        platform_api.post(
            targets,
            {"name": "tls", "kind": "docker", "docker_url": "tcp://docker.internal:2376", **docker_tls()},
            format="json",
        )
    )["id"]
    ssh_id = keep(
        platform_api.post(
            targets,
            {
                "name": "ssh",
                "kind": "docker",
                "docker_url": "ssh://deploy@gpu-1.example.com",
                "ssh_key": ssh_private_key(),
            },
            format="json",
        )
    )["id"]
    kube_id = keep(
        platform_api.post(
            targets,
            {"name": "k8s", "kind": "kubernetes", "kube_auth": "kubeconfig", "kubeconfig": kubeconfig()},
            format="json",
        )
    )["id"]
    for target_id in (tls_id, ssh_id, kube_id):
        keep(platform_api.get(f"{targets}{target_id}/"))
        keep(platform_api.post(f"{targets}{target_id}/check/"))
        keep(platform_api.post("/api/v1/platform/grants/", {"target": target_id, "tenant": tenant.slug}, format="json"))
    keep(platform_api.patch(f"{targets}{tls_id}/", docker_tls(), format="json"))
    keep(platform_api.patch(f"{targets}{kube_id}/", {"kubeconfig": kubeconfig(contexts=("prod", "b"))}, format="json"))
    keep(platform_api.get(targets))
    keep(platform_api.get("/api/v1/platform/grants/"))
    keep(owner_api.get("/api/v1/targets/"))
    for target_id in (tls_id, ssh_id, kube_id):
        keep(owner_api.get(f"/api/v1/targets/{target_id}/"))
    keep(owner_api.get("/api/v1/audit/"))
    assert AuditLog.objects.filter(action__startswith="target.").count() >= 11
    audit = json.dumps(list(AuditLog.objects.values()), default=str)
    for text in [*answers, audit]:
        assert SECRET not in text
        assert (
            "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text and "certificate-authority-data" not in text
        )
    flags = {
        row["name"]: (row["has_tls"], row["has_ssh_key"], row["has_kubeconfig"])
        for row in platform_api.get(targets).json()["results"]
    }
    assert flags == {"tls": (True, False, False), "ssh": (False, True, False), "k8s": (False, False, True)}
