"""Platform targets and grants through the REST API, as a platform admin with a real token:
connection settings checked strictly, credentials write-only and encrypted at rest, grants and
their revocation, and audit rows that name credentials but never contain them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.test import override_settings
from rest_framework.test import APIClient

from controlplane.audit.models import AuditLog
from controlplane.core.crypto import decrypt_json
from controlplane.deployments.models import Target, TargetGrant
from controlplane.deployments.selectors import target_credentials
from tests.factories import (
    AccessTokenFactory,
    DeploymentFactory,
    PlatformAdminFactory,
    TargetFactory,
    TargetGrantFactory,
    TenantFactory,
)
from tests.support.credentials import SECRET, docker_tls, kubeconfig, other_private_key, ssh_private_key

pytestmark = pytest.mark.django_db

TARGETS = "/api/v1/platform/targets/"
GRANTS = "/api/v1/platform/grants/"
SOCKET = "unix:///var/run/docker.sock"


@pytest.fixture
def api() -> APIClient:
    secret = AccessTokenFactory(user=PlatformAdminFactory()).secret
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def create(api: APIClient, **body: Any) -> Any:
    return api.post(TARGETS, {"name": "box", **body}, format="json")


def errors(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 400, response.content
    return dict(response.json()["errors"])


# ----------------------------------------------------------------------------- docker


def test_docker_socket_from_the_allowlist_only(api: APIClient) -> None:
    response = create(api, kind="docker", docker_url=SOCKET)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["docker_url"] == SOCKET and body["publish_host"] == "127.0.0.1"
    assert (body["has_tls"], body["has_ssh_key"], body["has_kubeconfig"]) == (False, False, False)
    refused = create(api, name="other", kind="docker", docker_url="unix:///run/user/1000/docker.sock")
    assert "HANGAR_DOCKER_SOCKETS" in errors(refused)["docker_url"][0]
    with override_settings(HANGAR_DOCKER_SOCKETS=["unix:///run/user/1000/docker.sock"]):
        assert (
            create(api, name="other", kind="docker", docker_url="unix:///run/user/1000/docker.sock").status_code == 201
        )


def test_a_docker_target_must_name_its_url(api: APIClient) -> None:
    assert "docker_url" in errors(create(api, kind="docker"))


def test_tcp_with_tls_is_stored_encrypted_and_never_shown(api: APIClient) -> None:
    tls = docker_tls()
    response = create(api, kind="docker", docker_url="tcp://docker.internal:2376", **tls)
    assert response.status_code == 201, response.content
    assert response.json()["has_tls"] is True
    assert SECRET not in response.content.decode() and "PRIVATE KEY" not in response.content.decode()
    target = Target.objects.get(name="box")
    assert SECRET not in target.credentials and "BEGIN" not in target.credentials  # ciphertext at rest
    assert target_credentials(target) == tls == decrypt_json(target.credentials)
    shown = api.get(f"{TARGETS}{target.pk}/").json()
    assert not {"tls_ca", "tls_cert", "tls_key", "credentials"} & set(shown) and shown["has_tls"] is True


@pytest.mark.parametrize("missing", ["tls_ca", "tls_cert", "tls_key"])
def test_tcp_needs_all_three_tls_files(api: APIClient, missing: str) -> None:
    tls = docker_tls()
    del tls[missing]
    assert list(errors(create(api, kind="docker", docker_url="tcp://docker.internal:2376", **tls))) == [missing]


def test_tls_key_must_match_the_certificate(api: APIClient) -> None:
    tls = docker_tls() | {"tls_key": other_private_key()}
    found = errors(create(api, kind="docker", docker_url="tcp://docker.internal:2376", **tls))
    assert found == {"tls_key": ["Does not match the certificate in tls_cert."]}


def test_expired_and_unparsable_material_is_refused_without_echo(api: APIClient) -> None:
    expired = docker_tls(expired=True)
    found = errors(create(api, kind="docker", docker_url="tcp://docker.internal:2376", **expired))
    assert "expired" in found["tls_cert"][0]
    garbage = {
        "tls_ca": f"-----BEGIN CERTIFICATE-----\n{SECRET}\n-----END CERTIFICATE-----\n",
        "tls_cert": f"not a cert {SECRET}",
        "tls_key": f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n-----END PRIVATE KEY-----\n",
    }
    response = create(api, kind="docker", docker_url="tcp://docker.internal:2376", **garbage)
    assert set(errors(response)) == {"tls_ca", "tls_cert", "tls_key"}
    assert SECRET not in response.content.decode()


def test_plain_tcp_only_when_the_settings_allow_it(api: APIClient) -> None:
    found = errors(create(api, kind="docker", docker_url="tcp://docker.internal:2375"))
    assert "TLS" in found["docker_url"][0]
    with override_settings(HANGAR_DOCKER_ALLOW_PLAIN_TCP=True):
        assert create(api, kind="docker", docker_url="tcp://docker.internal:2375").status_code == 201


def test_ssh_needs_a_key(api: APIClient) -> None:
    assert "ssh_key" in errors(create(api, kind="docker", docker_url="ssh://deploy@gpu-1.example.com"))
    response = create(api, kind="docker", docker_url="ssh://deploy@gpu-1.example.com:2222", ssh_key=ssh_private_key())
    assert response.status_code == 201, response.content
    assert response.json()["has_ssh_key"] is True and response.json()["has_tls"] is False


def test_encrypted_keys_are_refused(api: APIClient) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    locked = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.BestAvailableEncryption(b"pw")
    ).decode()
    found = errors(create(api, kind="docker", docker_url="ssh://deploy@gpu-1.example.com", ssh_key=locked))
    assert "passphrase" in found["ssh_key"][0]


@pytest.mark.parametrize(
    "url",
    [
        "http://docker.internal:2375",
        "https://docker.internal:2376",
        "tcp://docker.internal",  # no port
        "tcp://docker.internal:0",
        "tcp://docker.internal:65536",
        "tcp://docker.internal:http",
        "tcp://admin@docker.internal:2376",
        "tcp://admin:pw@docker.internal:2376",
        "tcp://docker.internal:2376/v1.45/containers/json",
        "tcp://docker.internal:2376?x=1",
        "tcp://docker.internal:2376#frag",
        "tcp://169.254.169.254:2376",
        "tcp://2852039166:2376",  # 169.254.169.254 written as one number
        "tcp://0xa9.0xfe.0xa9.0xfe:2376",
        "tcp://[::ffff:169.254.169.254]:2376",
        "tcp://0.0.0.0:2376",
        "tcp://[fe80::1]:2376",
        "tcp://docker .internal:2376",
        "ssh://gpu-1.example.com",  # no user
        "ssh://deploy:pw@gpu-1.example.com",
        "ssh://deploy@gpu-1.example.com/path",
        "unix://var/run/docker.sock",
        "file:///var/run/docker.sock",
        "npipe:////./pipe/docker_engine",
    ],
)
def test_bad_docker_urls_are_field_errors(api: APIClient, url: str) -> None:
    extra = (
        docker_tls() if url.startswith("tcp://") else {"ssh_key": ssh_private_key()} if url.startswith("ssh") else {}
    )
    found = errors(create(api, kind="docker", docker_url=url, **extra))
    assert list(found) == ["docker_url"], found
    assert not Target.objects.exists()


@pytest.mark.parametrize("host", ["10.0.0.5", "gpu-1.example.com", "fd00::5", "localhost"])
def test_publish_host_accepts_addresses_and_names(api: APIClient, host: str) -> None:
    assert create(api, publish_host=host).json()["publish_host"] == host


@pytest.mark.parametrize(
    "host", ["", "http://10.0.0.5", "10.0.0.5:8080", "user@10.0.0.5", "10.0.0.5/24", "0.0.0.0", "169.254.1.1", "a..b"]
)
def test_publish_host_refuses_anything_else(api: APIClient, host: str) -> None:
    assert "publish_host" in errors(create(api, publish_host=host))


def test_settings_of_another_kind_are_refused(api: APIClient) -> None:
    found = errors(create(api, kind="local", docker_url=SOCKET, kube_auth="in_cluster", **docker_tls()))
    assert set(found) == {"docker_url", "kube_auth", "tls_ca", "tls_cert", "tls_key"}


# ----------------------------------------------------------------------------- kubernetes


def test_kubernetes_in_cluster(api: APIClient) -> None:
    response = create(api, kind="kubernetes", kube_auth="in_cluster", kube_namespace="llm")
    assert response.status_code == 201, response.content
    assert "kube_auth" in errors(create(api, name="k2", kind="kubernetes", kube_namespace="llm"))
    assert response.json()["kube_endpoints"] == "pod_ip"


def test_kubernetes_endpoint_mode_is_a_platform_setting(api: APIClient) -> None:
    response = create(api, kind="kubernetes", kube_auth="in_cluster", kube_namespace="llm", kube_endpoints="service")
    assert response.status_code == 201, response.content
    assert response.json()["kube_endpoints"] == "service"
    url = f"/api/v1/platform/targets/{response.json()['id']}/"
    assert api.patch(url, {"kube_endpoints": "pod_ip"}, format="json").json()["kube_endpoints"] == "pod_ip"
    assert "kube_endpoints" in errors(api.patch(url, {"kube_endpoints": "pod_dns"}, format="json"))
    assert "kube_endpoints" in errors(
        create(api, name="d2", kind="docker", docker_url=SOCKET, kube_endpoints="service")
    )


def test_kubernetes_with_an_uploaded_kubeconfig(api: APIClient) -> None:
    config = kubeconfig(contexts=("prod", "staging"))
    body = {"kind": "kubernetes", "kube_auth": "kubeconfig", "kube_namespace": "llm", "kubeconfig": config}
    response = create(api, **body, kube_context="staging")
    assert response.status_code == 201, response.content
    assert response.json()["has_kubeconfig"] is True and SECRET not in response.content.decode()
    target = Target.objects.get(name="box")
    assert target_credentials(target) == {"kubeconfig": config}
    assert create(api, **body, name="current").status_code == 201  # no context: the current-context
    found = errors(create(api, **body, name="x", kube_context="dev"))
    assert found == {"kube_context": ["Name one of the kubeconfig's contexts: ['prod', 'staging']."]}
    assert "kubeconfig" in errors(create(api, **(body | {"kubeconfig": ""}), name="y"))


@pytest.mark.parametrize(
    "config",
    [
        kubeconfig(user={"exec": {"command": "/bin/sh", "args": ["-c", "id"]}}),
        kubeconfig(user={"auth-provider": {"name": "gcp"}}),
        kubeconfig(user={"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}),
        kubeconfig(user={"client-certificate": "/etc/kubernetes/admin.crt", "client-key": "/etc/kubernetes/admin.key"}),
        kubeconfig(server="http://k8s.example.com:8080"),
        kubeconfig(server="https://169.254.169.254"),
        "clusters: [",
        "just a string",
        "clusters: []\ncontexts: []\nusers: []\n",
        "a: " + "x" * (256 * 1024),
    ],
    ids=["exec", "auth-provider", "tokenFile", "cert-files", "http", "metadata", "yaml", "scalar", "empty", "too-big"],
)
def test_kubeconfigs_that_reach_into_the_worker_are_refused(api: APIClient, config: str) -> None:
    body = {"kind": "kubernetes", "kube_auth": "kubeconfig", "kube_namespace": "llm", "kubeconfig": config}
    assert list(errors(create(api, **body))) == ["kubeconfig"]


@pytest.mark.parametrize(
    ("volume", "ok"),
    [
        ({"type": "hostPath", "path": "/srv/models"}, True),
        ({"type": "pvc", "claimName": "models"}, True),
        ({}, True),
        ({"cachePath": "/var/lib/hangar/model-cache"}, True),
        ({"type": "pvc", "claimName": "models", "cachePath": "/var/lib/hangar/model-cache"}, True),
        ({"cachePath": "var/cache"}, False),
        ({"cachePath": "/var/../etc"}, False),
        ({"cachePath": "/"}, False),
        ({"cachePath": ["/a"]}, False),
        ({"type": "hostPath", "path": "srv/models"}, False),
        ({"type": "hostPath", "path": "/srv/../etc"}, False),
        ({"type": "hostPath", "path": "/"}, False),
        ({"type": "hostPath", "path": "/srv", "readOnly": False}, False),
        ({"type": "pvc", "claimName": "Not_A_Name"}, False),
        ({"type": "nfs", "server": "10.0.0.1", "path": "/"}, False),
    ],
)
def test_model_volume_is_hostpath_or_pvc_only(api: APIClient, volume: dict[str, Any], ok: bool) -> None:
    response = create(api, kind="kubernetes", kube_auth="in_cluster", model_volume=volume)
    if ok:
        assert response.status_code == 201, response.content
        assert response.json()["model_volume"] == volume
    else:
        assert list(errors(response)) == ["model_volume"]


# ----------------------------------------------------------------------------- updates, deletes, audit


def test_update_keeps_credentials_and_drops_those_the_url_no_longer_uses(api: APIClient) -> None:
    target_id = create(api, kind="docker", docker_url="tcp://docker.internal:2376", **docker_tls()).json()["id"]
    url = f"{TARGETS}{target_id}/"
    assert api.patch(url, {"labels": {"zone": "a"}}, format="json").json()["has_tls"] is True
    assert "tls_key" in errors(api.patch(url, {"tls_key": ""}, format="json"))  # still needed
    moved = api.patch(
        url, {"docker_url": "ssh://deploy@gpu-1.example.com", "ssh_key": ssh_private_key()}, format="json"
    )
    assert moved.status_code == 200, moved.content
    assert (moved.json()["has_tls"], moved.json()["has_ssh_key"]) == (False, True)
    assert set(target_credentials(Target.objects.get(pk=target_id))) == {"ssh_key"}
    changes = AuditLog.objects.filter(action="target.update").order_by("id").last().changes
    assert changes == {
        "docker_url": "ssh://deploy@gpu-1.example.com",
        "credentials": ["tls_ca", "tls_cert", "tls_key", "ssh_key"],
    }


def test_kind_is_fixed_and_names_are_unique(api: APIClient) -> None:
    first = create(api).json()["id"]
    create(api, name="second")
    response = api.patch(f"{TARGETS}{first}/", {"kind": "docker"}, format="json")
    assert errors(response) == {"kind": ["This field is read-only."]}
    assert "name" in errors(api.patch(f"{TARGETS}{first}/", {"name": "second"}, format="json"))
    assert "name" in errors(create(api, name="second"))


def test_delete_is_refused_while_deployments_use_the_target(api: APIClient) -> None:
    deployment = DeploymentFactory()
    response = api.delete(f"{TARGETS}{deployment.target_id}/")
    assert response.status_code == 409
    spare = TargetFactory(tenant=TenantFactory())
    assert api.delete(f"{TARGETS}{spare.pk}/").status_code == 204
    assert not TargetGrant.objects.filter(target_id=spare.pk).exists()


def test_audit_rows_name_credentials_but_never_hold_them(api: APIClient) -> None:
    target_id = create(api, kind="docker", docker_url="tcp://docker.internal:2376", **docker_tls()).json()["id"]
    api.patch(f"{TARGETS}{target_id}/", docker_tls(), format="json")
    api.post(f"{TARGETS}{target_id}/check/")
    rows = list(AuditLog.objects.filter(object_type="target").order_by("id"))
    assert [row.action for row in rows] == ["target.create", "target.update", "target.check"]
    assert rows[0].changes["credentials"] == ["tls_ca", "tls_cert", "tls_key"]
    assert rows[1].changes == {"credentials": ["tls_ca", "tls_cert", "tls_key"]}
    dumped = json.dumps([row.changes for row in AuditLog.objects.all()])
    assert SECRET not in dumped and "BEGIN" not in dumped


# ----------------------------------------------------------------------------- grants


def test_grant_list_create_and_revoke(api: APIClient) -> None:
    tenant, target = TenantFactory(), TargetFactory(name="gpu")
    response = api.post(GRANTS, {"target": target.pk, "tenant": tenant.slug}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["target"], body["target_name"], body["tenant"], body["namespace"]) == (
        target.pk,
        "gpu",
        tenant.slug,
        "",
    )
    assert api.post(GRANTS, {"target": target.pk, "tenant": tenant.slug}, format="json").status_code == 409
    listed = api.get(GRANTS, {"tenant": tenant.slug}).json()["results"]
    assert [row["id"] for row in listed] == [body["id"]]
    assert api.get(GRANTS, {"target": target.pk + 1000}).json()["results"] == []
    assert api.delete(f"{GRANTS}{body['id']}/").status_code == 204
    assert not TargetGrant.objects.exists()
    audit = list(
        AuditLog.objects.filter(object_type="targetgrant").order_by("id").values("action", "tenant_id", "changes")
    )
    assert audit == [
        {"action": "target.grant", "tenant_id": tenant.pk, "changes": {"target": "gpu", "tenant": tenant.slug}},
        {"action": "target.revoke", "tenant_id": tenant.pk, "changes": {"target": "gpu", "tenant": tenant.slug}},
    ]


def test_grant_input_errors(api: APIClient) -> None:
    tenant, local = TenantFactory(), TargetFactory()
    response = api.post(GRANTS, {"target": 10**9, "tenant": "nobody"}, format="json")
    assert set(errors(response)) == {"target", "tenant"}
    response = api.post(GRANTS, {"target": local.pk, "tenant": tenant.slug, "namespace": "team-a"}, format="json")
    assert errors(response) == {"namespace": ["Only for Kubernetes targets."]}
    kube = TargetFactory(kind="kubernetes", kube_auth="in_cluster")
    response = api.post(GRANTS, {"target": kube.pk, "tenant": tenant.slug, "namespace": "Team A"}, format="json")
    assert "namespace" in errors(response)
    response = api.post(GRANTS, {"target": kube.pk, "tenant": tenant.slug, "namespace": "team-a"}, format="json")
    assert response.status_code == 201 and response.json()["namespace"] == "team-a"


def test_revoke_is_refused_while_the_tenant_has_deployments_there(api: APIClient) -> None:
    deployment = DeploymentFactory()
    grant = TargetGrant.objects.get(target=deployment.target, tenant=deployment.tenant)
    other = TargetGrantFactory(target=deployment.target, tenant=TenantFactory())
    response = api.delete(f"{GRANTS}{grant.pk}/")
    assert response.status_code == 409
    assert deployment.tenant.slug in response.json()["detail"]
    assert TargetGrant.objects.filter(pk=grant.pk).exists()
    assert api.delete(f"{GRANTS}{other.pk}/").status_code == 204  # another tenant's grant: no deployments
