"""How the worker connects to a target, with the platform's settings and uploaded credentials.

Docker: the real daemon for publishing, and real TLS servers (client certificates required)
for ``tcp://``. Kubernetes: the real client loaders (uploaded kubeconfig, in-cluster service
account) against small API servers on 127.0.0.1, never the worker's own kubeconfig.
"""

from __future__ import annotations

import socket
import ssl
import stat
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.config import incluster_config

from controlplane.core.crypto import encrypt_json
from controlplane.deployments.models import Deployment, Target
from tests.factories import DeploymentFactory, TargetFactory, TargetGrantFactory, TenantFactory
from tests.support.ports import listening_socket
from tests.support.waiting import wait_for
from tests.workers.docker_support import (
    DOCKER_URL,
    ensure_runtime_image,
    readable_by_containers,
)
from tests.workers.fake_apis import FakeAPI, FakeSSH, Pair, docker_router, issue, make_ca, server_context, ssh_key_pair
from workers import reconciler
from workers.drivers import driver_for, instance_name
from workers.drivers.base import ReplicaSpec
from workers.tasks import check_target

# ----------------------------------------------------------------------------- Docker: publish host


def replica_spec(model_dir: Path, deployment_id: int) -> ReplicaSpec:
    return ReplicaSpec(
        instance=instance_name(),
        tenant_id=1,
        deployment_id=deployment_id,
        deployment_name="chat",
        name="chat-g1-0",
        slot=0,
        generation=1,
        model_path=str(model_dir),
        served_model_name="tiny",
        cpus=1.0,
        memory_mb=1024,
    )


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("publish_host", ["127.0.0.1", "127.0.0.2"])
def test_docker_replicas_publish_on_the_targets_publish_host_only(
    docker_client: Any, tiny_model_dir: Path, db: Any, publish_host: str
) -> None:
    ensure_runtime_image(docker_client)
    target = TargetFactory(kind="docker", docker_url=DOCKER_URL, publish_host=publish_host)
    driver = driver_for(target)
    observed = driver.create(replica_spec(readable_by_containers(tiny_model_dir), deployment_id=990_001))
    try:
        inspect = docker_client.api.inspect_container(observed.backend_id)
        [binding] = inspect["HostConfig"]["PortBindings"]["8000/tcp"]
        assert binding["HostIp"] == publish_host
        [published] = inspect["NetworkSettings"]["Ports"]["8000/tcp"]
        assert published["HostIp"] == publish_host
        assert observed.endpoint == f"http://{publish_host}:{published['HostPort']}"

        # The replica answers there (503 while its model loads), and nowhere else on the host.
        def answers() -> bool:
            try:
                return httpx.get(f"{observed.endpoint}/health", timeout=2).status_code in (200, 503)
            except httpx.HTTPError:
                return False

        wait_for(answers, timeout=60, message=f"replica answering on {observed.endpoint}")
        other = "127.0.0.2" if publish_host == "127.0.0.1" else "127.0.0.1"
        with pytest.raises(OSError), socket.create_connection((other, int(published["HostPort"])), timeout=2):
            pass
    finally:
        driver.remove(observed.backend_id)
        driver.close()


# ----------------------------------------------------------------------------- Docker: TLS


@pytest.fixture(scope="module")
def pki() -> dict[str, Pair]:
    ca = make_ca("hangar-test-ca")
    rogue = make_ca("someone-else")
    return {
        "ca": ca,
        "server": issue(ca, "docker-host", server=True),
        "client": issue(ca, "hangar-worker", server=False),
        "rogue_client": issue(rogue, "hangar-worker", server=False),
        "rogue_server": issue(rogue, "docker-host", server=True),
        "rogue_ca": rogue,
    }


def tls_target(url: str, *, ca: Pair, client: Pair) -> Target:
    creds = {"tls_ca": ca.cert_pem, "tls_cert": client.cert_pem, "tls_key": client.key_pem}
    target: Target = TargetFactory(kind="docker", docker_url=url, credentials=encrypt_json(creds))
    return target


def health_of(target: Target) -> dict[str, Any]:
    check_target(target.pk)
    return dict(Target.objects.get(pk=target.pk).health)


@pytest.mark.django_db
def test_tls_daemon_is_reached_with_the_uploaded_client_certificate(pki: dict[str, Pair], tmp_path: Path) -> None:
    context = server_context(pki["ca"], pki["server"], tmp_path)
    with FakeAPI(docker_router(), tls=context) as daemon:
        target = tls_target(f"tcp://127.0.0.1:{daemon.port}", ca=pki["ca"], client=pki["client"])
        health = health_of(target)
    assert health["status"] == "ok" and health["reachable"] is True, health
    assert health["version"] == "24.0.7" and health["cpus"] == 8
    assert {s.path for s in daemon.seen} >= {"/version", "/_ping", "/info"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "server, client",
    [
        ("server", "rogue_client"),  # our client certificate is not one the daemon trusts
        ("rogue_server", "client"),  # the daemon's certificate is not from the uploaded CA
    ],
)
def test_tls_failures_are_refused_with_a_fixed_reason(
    pki: dict[str, Pair], tmp_path: Path, server: str, client: str
) -> None:
    context = server_context(pki["ca"], pki[server], tmp_path)
    with FakeAPI(docker_router(), tls=context) as daemon:
        target = tls_target(f"tcp://127.0.0.1:{daemon.port}", ca=pki["ca"], client=pki[client])
        health = health_of(target)
    assert health["reachable"] is False
    assert (health["status"], health["reason"]) == ("refused", "TLS handshake failed"), health
    assert daemon.seen == []  # no request got through


@pytest.mark.django_db
def test_tls_material_lives_in_a_private_directory_removed_on_close(
    pki: dict[str, Pair], tmp_path: Path, monkeypatch: Any
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with FakeAPI(docker_router(), tls=server_context(pki["ca"], pki["server"], tmp_path)) as daemon:
        driver = driver_for(tls_target(f"tcp://127.0.0.1:{daemon.port}", ca=pki["ca"], client=pki["client"]))
        assert list(scratch.iterdir()) == []  # nothing written before the first call
        assert driver.check()["status"] == "ok"
        [private] = list(scratch.iterdir())
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        files = sorted(private.iterdir())
        assert [f.name for f in files] == ["ca.pem", "cert.pem", "key.pem"]
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
        assert (private / "key.pem").read_text().strip() == pki["client"].key_pem.strip()
        driver.close()
    assert list(scratch.iterdir()) == []


@pytest.mark.django_db
def test_unusable_tls_material_is_misconfigured_before_any_connection(pki: dict[str, Pair]) -> None:
    with listening_socket() as listener:
        listener.settimeout(0.2)
        creds = {"tls_ca": pki["ca"].cert_pem, "tls_cert": pki["client"].cert_pem, "tls_key": "not a key"}
        target = TargetFactory(
            kind="docker",
            docker_url=f"tcp://127.0.0.1:{listener.getsockname()[1]}",
            credentials=encrypt_json(creds),
        )
        health = health_of(target)
        with pytest.raises(TimeoutError):
            listener.accept()
    assert (health["status"], health["reason"]) == ("misconfigured", "invalid credentials")


# ----------------------------------------------------------------------------- Kubernetes


def k8s_router(seen_namespaces: list[str]) -> Any:
    """Answers like a small API server: version, empty lists, 404 for single reads, echo for
    writes; records the namespace of every namespaced request."""
    import json
    import re

    version = {
        "major": "1",
        "minor": "30",
        "gitVersion": "v1.30.2",
        "gitCommit": "0" * 40,
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.22",
        "compiler": "gc",
        "platform": "linux/amd64",
    }

    def route(method: str, path: str, query: str, body: bytes) -> tuple[int, Any]:
        match = re.match(r"^/apis?/(?:[a-z.]+/)?v1/namespaces/([^/]+)/([a-z]+)(/[^/]+)?$", path)
        if match:
            seen_namespaces.append(match.group(1))
        if path.rstrip("/") == "/version":
            return 200, version
        if path == "/api/v1/nodes":
            return 200, {"items": [{"metadata": {"name": "n1"}, "status": {"allocatable": {"nvidia.com/gpu": "2"}}}]}
        if method == "GET" and match and not match.group(3):
            return 200, {"metadata": {}, "items": []}
        if method == "GET":
            return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
        if method in ("POST", "PATCH", "PUT"):
            return (201 if method == "POST" else 200), json.loads(body or b"{}")
        return 200, {}

    return route


def kubeconfig(server: str, *, token: str = "uploaded-token", user: dict[str, Any] | None = None) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "platform", "cluster": {"server": server}}],
            "users": [{"name": "hangar", "user": user or {"token": token}}],
            "contexts": [{"name": "hangar", "context": {"cluster": "platform", "user": "hangar"}}],
            "current-context": "hangar",
        }
    )


@pytest.fixture
def worker_kubeconfig(tmp_path: Path, monkeypatch: Any) -> str:
    """The worker's own kubeconfig ($KUBECONFIG and ~/.kube/config), pointing elsewhere."""
    elsewhere = "https://worker-own-cluster.invalid:6443"
    path = tmp_path / "worker-kubeconfig"
    path.write_text(kubeconfig(elsewhere, token="worker-token"))
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text(path.read_text())
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setenv("HOME", str(home))
    return elsewhere


def kube_target(content: str, **fields: Any) -> Target:
    target: Target = TargetFactory(
        kind="kubernetes", kube_auth="kubeconfig", credentials=encrypt_json({"kubeconfig": content}), **fields
    )
    return target


@pytest.mark.django_db
def test_uploaded_kubeconfig_is_used_never_the_workers(worker_kubeconfig: str) -> None:
    default_host = k8s.Configuration.get_default_copy().host
    with FakeAPI(k8s_router([])) as api:
        server = f"http://127.0.0.1:{api.port}"
        target = kube_target(kubeconfig(server), kube_namespace="serving")
        driver = driver_for(target)
        assert driver.core.api_client.configuration.host == server
        health = health_of(target)
    assert health["status"] == "ok" and health["version"] == "v1.30.2" and health["gpus"] == 2, health
    assert {s.headers.get("authorization") for s in api.seen} == {"Bearer uploaded-token"}
    assert k8s.Configuration.get_default_copy().host == default_host  # no global configuration touched
    assert worker_kubeconfig not in str(health)


@pytest.mark.django_db
def test_kubeconfig_context_picks_the_uploaded_context() -> None:
    content = yaml.safe_load(kubeconfig("http://127.0.0.1:1"))
    content["clusters"].append({"name": "other", "cluster": {"server": "http://127.0.0.1:2"}})
    content["contexts"].append({"name": "second", "context": {"cluster": "other", "user": "hangar"}})
    driver = driver_for(kube_target(yaml.safe_dump(content), kube_context="second"))
    assert driver.core.api_client.configuration.host == "http://127.0.0.1:2"


@pytest.mark.django_db
def test_in_cluster_uses_the_service_account_in_a_configuration_of_its_own(
    pki: dict[str, Pair], tmp_path: Path, monkeypatch: Any, worker_kubeconfig: str
) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("service-account-token")
    (account / "ca.crt").write_text(pki["ca"].cert_pem)
    # The real loader runs; only where it looks for the mounted service account moves.
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*pki["server"].write(tmp_path, "apiserver"))
    default_host = k8s.Configuration.get_default_copy().host
    with FakeAPI(k8s_router([]), tls=context) as api:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
        target = TargetFactory(kind="kubernetes", kube_auth="in_cluster", kube_namespace="serving")
        driver = driver_for(target)
        assert driver.core.api_client.configuration.host == f"https://127.0.0.1:{api.port}"
        health = health_of(target)
    assert health["status"] == "ok" and health["version"] == "v1.30.2", health
    assert {s.headers.get("authorization") for s in api.seen} == {
        "bearer service-account-token"
    }  # the loader's spelling
    assert k8s.Configuration.get_default_copy().host == default_host


@pytest.mark.django_db
def test_in_cluster_outside_a_cluster_is_misconfigured(monkeypatch: Any) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    target = TargetFactory(kind="kubernetes", kube_auth="in_cluster")
    health = health_of(target)
    assert (health["status"], health["reason"]) == ("misconfigured", "not running in a cluster")


@pytest.mark.django_db
def test_namespace_comes_from_the_tenants_grant(worker_kubeconfig: str, model_root: Path) -> None:
    seen: list[str] = []
    with FakeAPI(k8s_router(seen)) as api:
        target = kube_target(kubeconfig(f"http://127.0.0.1:{api.port}"), kube_namespace="platform-ns")
        own_namespace, shared = TenantFactory(), TenantFactory()
        TargetGrantFactory(target=target, tenant=own_namespace, namespace="team-a")
        TargetGrantFactory(target=target, tenant=shared)
        assert driver_for(target, tenant_id=own_namespace.pk).namespace == "team-a"
        assert driver_for(target, tenant_id=shared.pk).namespace == "platform-ns"
        assert driver_for(target).namespace == "platform-ns"

        # The reconciler asks for the deployment's tenant: its objects land in the grant's namespace.
        source = model_root / own_namespace.slug / "tiny"
        source.mkdir(parents=True)
        deployment = DeploymentFactory(
            tenant=own_namespace, target=target, model__tenant=own_namespace, model__source=str(source)
        )
        reconciler.reconcile(deployment.pk, owner="t")
    assert Deployment.objects.get(pk=deployment.pk).phase != "Failed"
    assert seen and set(seen) == {"team-a"}, seen
    assert any(s.method == "POST" and "/namespaces/team-a/deployments" in s.path for s in api.seen)


def test_fake_api_servers_refuse_what_they_should(pki: dict[str, Pair], tmp_path: Path) -> None:
    """The TLS server used above really requires a client certificate of its CA."""
    context = server_context(pki["ca"], pki["server"], tmp_path)
    with FakeAPI(docker_router(), tls=context) as daemon:
        ca_file = tmp_path / "ca.pem"
        ca_file.write_text(pki["ca"].cert_pem)
        without_cert = httpx.Client(verify=ssl.create_default_context(cafile=str(ca_file)))
        with pytest.raises(httpx.HTTPError):
            without_cert.get(f"https://127.0.0.1:{daemon.port}/_ping")
        with_cert = ssl.create_default_context(cafile=str(ca_file))
        with_cert.load_cert_chain(*pki["client"].write(tmp_path, "client"))
        assert httpx.Client(verify=with_cert).get(f"https://127.0.0.1:{daemon.port}/_ping").text == "OK"


# ----------------------------------------------------------------------------- Docker: SSH


def ssh_target(url: str, key: str, **creds: str) -> Target:
    target: Target = TargetFactory(kind="docker", docker_url=url, credentials=encrypt_json({"ssh_key": key, **creds}))
    return target


@pytest.fixture
def worker_home(tmp_path: Path, monkeypatch: Any) -> Path:
    """The worker's home: its own SSH key and config, which an ssh:// target must never use."""
    home = tmp_path / "worker-home"
    (home / ".ssh").mkdir(parents=True)
    own_key, _ = ssh_key_pair()
    (home / ".ssh" / "id_ed25519").write_text(own_key)
    (home / ".ssh" / "config").write_text("Host *\n  User worker\n  IdentityFile ~/.ssh/id_ed25519\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


@pytest.mark.django_db
def test_ssh_daemon_is_reached_with_the_uploaded_key_only(worker_home: Path) -> None:
    uploaded, public = ssh_key_pair()
    with FakeAPI(docker_router()) as daemon, FakeSSH("hangar", public, forward_port=daemon.port) as ssh:
        # The host key is trusted the way the API allows: the worker's known_hosts.
        (worker_home / ".ssh" / "known_hosts").write_text(ssh.known_hosts_line())
        target = ssh_target(f"ssh://hangar@127.0.0.1:{ssh.port}", uploaded)
        health = health_of(target)
    assert health["status"] == "ok" and health["version"] == "24.0.7", health
    assert {user for user, _ in ssh.logins} == {"hangar"}
    assert {fingerprint for _, fingerprint in ssh.logins} == {public.fingerprint}  # no other key offered
    assert set(ssh.commands) == {"docker system dial-stdio"}


@pytest.mark.django_db
def test_ssh_with_a_key_the_host_does_not_accept_is_refused(worker_home: Path) -> None:
    uploaded, _ = ssh_key_pair()
    _, accepted = ssh_key_pair()
    with FakeAPI(docker_router()) as daemon, FakeSSH("hangar", accepted, forward_port=daemon.port) as ssh:
        target = ssh_target(f"ssh://hangar@127.0.0.1:{ssh.port}", uploaded, ssh_known_hosts=ssh.known_hosts_line())
        health = health_of(target)
    assert (health["status"], health["reason"]) == ("refused", "authentication failed"), health
    assert daemon.seen == []


@pytest.mark.django_db
def test_ssh_to_a_host_with_an_unknown_host_key_is_refused(worker_home: Path) -> None:
    uploaded, public = ssh_key_pair()
    with FakeAPI(docker_router()) as daemon, FakeSSH("hangar", public, forward_port=daemon.port) as ssh:
        target = ssh_target(f"ssh://hangar@127.0.0.1:{ssh.port}", uploaded)
        health = health_of(target)
    assert (health["status"], health["reason"]) == ("refused", "SSH host key not trusted"), health
    assert ssh.logins == [] and daemon.seen == []  # nothing sent to a host that could be anyone


# ----------------------------------------------------------------------------- watchers


def test_the_die_watcher_connects_the_way_the_driver_does(
    pki: dict[str, Pair], tmp_path: Path, transactional_db: Any
) -> None:
    from workers import watch

    died = {
        "Type": "container",
        "Action": "die",
        "Actor": {"ID": "c1", "Attributes": {"hangar.deployment": "4242", "hangar.instance": instance_name()}},
    }
    context = server_context(pki["ca"], pki["server"], tmp_path)
    with (
        FakeAPI(docker_router(overrides={("GET", "/events"): (200, died)}), tls=context) as daemon,
        FakeAPI(docker_router()) as plain,
    ):
        tls_target(f"tcp://127.0.0.1:{daemon.port}", ca=pki["ca"], client=pki["client"])
        TargetFactory(kind="docker", docker_url=f"tcp://127.0.0.1:{plain.port}")  # plain TCP: refused
        nudged: list[int] = []
        stop = watch.start(nudged.append)
        try:
            wait_for(lambda: 4242 in nudged, timeout=20, message="a nudge for the dead replica's deployment")
        finally:
            stop.set()
    [events] = [s for s in daemon.seen if s.path == "/events"][:1]
    assert f"hangar.instance={instance_name()}" in events.query.replace("%3D", "=")
    assert plain.connections == 0


@pytest.mark.django_db
def test_orphans_are_collected_in_every_granted_namespace(worker_kubeconfig: str) -> None:
    from workers.tasks import collect_orphans

    orphan = {
        "metadata": {
            "name": "hgr-orphan",
            "namespace": "team-a",
            "labels": {"hangar.instance": instance_name(), "hangar.deployment": "987654"},
        }
    }
    seen: list[str] = []
    route = k8s_router(seen)

    def with_orphan(method: str, path: str, query: str, body: bytes) -> tuple[int, Any]:
        if method == "GET" and path == "/apis/apps/v1/namespaces/team-a/deployments":
            return 200, {"metadata": {}, "items": [orphan]}
        return route(method, path, query, body)

    with FakeAPI(with_orphan) as api:
        target = kube_target(kubeconfig(f"http://127.0.0.1:{api.port}"), kube_namespace="platform-ns")
        TargetGrantFactory(target=target, tenant=TenantFactory(), namespace="team-a")
        TargetGrantFactory(target=target, tenant=TenantFactory())  # the target's namespace
        assert collect_orphans() >= 1
    assert {"platform-ns", "team-a"} <= set(seen)
    deleted = [s.path for s in api.seen if s.method == "DELETE"]
    assert "/apis/apps/v1/namespaces/team-a/deployments/hgr-orphan" in deleted
