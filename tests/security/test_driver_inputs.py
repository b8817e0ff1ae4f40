"""What reaches the drivers from outside, attacked: connection settings that point the worker at
the platform's own services, daemons that answer with hostile ports or bodies, and kubeconfigs
that would make the worker read its files or run commands.

The servers are real sockets on 127.0.0.1 spoken to by the real clients (docker-py,
kubernetes-client): a fake Docker API (plain TCP, allowed by a settings override where a test
needs it) and a fake Kubernetes API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.core.crypto import encrypt_json
from controlplane.deployments.choices import Phase
from controlplane.deployments.models import Deployment, DeploymentEvent, Replica, Target
from tests.factories import DeploymentFactory, TargetFactory, TenantFactory
from tests.workers.fake_apis import FakeAPI, docker_container, docker_router
from workers import reconciler
from workers.drivers import driver_for, instance_name
from workers.drivers.base import PermanentDriverError
from workers.drivers.health import STATUS_OF
from workers.tasks import check_target

pytestmark = pytest.mark.django_db

SECRET = "INTERNAL-SERVICE-BANNER-7f3a"  # what a service behind the worker would say
LONG_BODY = (SECRET + " lorem ipsum ") * 200


@pytest.fixture
def plain_tcp(settings: Any) -> None:
    settings.HANGAR_DOCKER_ALLOW_PLAIN_TCP = True


def health_of(target: Target) -> dict[str, Any]:
    check_target(target.pk)
    return dict(Target.objects.get(pk=target.pk).health)


def assert_fixed(health: dict[str, Any], status: str, reason: str) -> None:
    """Only the status and a reason from the fixed table: nothing the other side said."""
    assert (health["status"], health["reason"]) == (status, reason), health
    assert health["reason"] == "" if status == "ok" else health["reason"] in STATUS_OF
    text = json.dumps(health)
    assert SECRET not in text and len(text) < 600, text


def deployment_on(target: Target, model_root: Path, **fields: Any) -> Deployment:
    tenant = TenantFactory()
    source = model_root / tenant.slug / "tiny"
    source.mkdir(parents=True)
    deployment: Deployment = DeploymentFactory(
        tenant=tenant, target=target, model__tenant=tenant, model__source=str(source), name="chat", **fields
    )
    return deployment


def everything_said(deployment: Deployment) -> str:
    """Every text about a deployment that its tenant can read: phase, conditions, events, replicas."""
    d = Deployment.objects.get(pk=deployment.pk)
    events = list(DeploymentEvent.objects.filter(deployment=d).values_list("message", flat=True))
    replicas = list(Replica.objects.filter(deployment=d).values_list("last_error", "endpoint"))
    return json.dumps([d.phase_message, d.conditions, d.progress, events, replicas])


# ----------------------------------------------------------------------------- refused URLs


@pytest.fixture
def listener() -> Any:
    """A server on 127.0.0.1 that counts every connection made to it."""
    with FakeAPI(docker_router()) as server:
        yield server


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://127.0.0.1:{port}/", "URL scheme not allowed"),
        ("https://127.0.0.1:{port}", "URL scheme not allowed"),
        ("tcp://127.0.0.1:{port}", "TLS client certificate required"),  # plain TCP, not allowed
        ("tcp://admin:hunter2@127.0.0.1:{port}", "credentials in the URL not allowed"),
        ("tcp://admin@127.0.0.1:{port}", "credentials in the URL not allowed"),
        ("tcp://127.0.0.1:{port}/v1.41/containers/json?all=1", "invalid URL"),
        ("tcp://127.0.0.1:{port}#x", "invalid URL"),
        ("tcp://127.0.0.1:99999", "invalid URL"),
        ("tcp://169.254.169.254:80", "invalid URL"),  # a cloud metadata service
        ("ssh://root@169.254.169.254", "invalid URL"),
        ("tcp://0.0.0.0:{port}", "invalid URL"),
        ("tcp://[::ffff:169.254.169.254]:{port}", "invalid URL"),
        ("tcp://2130706433:{port}", "invalid URL"),  # 127.0.0.1 in numeric notation
        ("ssh://root@127.0.0.1:{port}", "SSH key required"),
        ("ssh://root:hunter2@127.0.0.1:{port}", "credentials in the URL not allowed"),
        ("unix:///run/hangar-secrets.sock", "socket not in the allowlist"),
        ("npipe:////./pipe/docker_engine", "URL scheme not allowed"),
        ("file:///etc/passwd", "URL scheme not allowed"),
    ],
)
def test_refused_docker_urls_never_reach_the_network(
    listener: FakeAPI, model_root: Path, url: str, reason: str
) -> None:
    target = TargetFactory(kind="docker", docker_url=url.format(port=listener.port))
    assert_fixed(health_of(target), "misconfigured", reason)

    deployment = deployment_on(target, model_root)
    reconciler.reconcile(deployment.pk, owner="t")
    d = Deployment.objects.get(pk=deployment.pk)
    assert d.phase == Phase.FAILED and reason in d.phase_message
    assert str(listener.port) not in everything_said(d)  # the target's URL is not the tenant's to read
    assert listener.connections == 0


def test_the_workers_own_socket_is_refused_unless_allowlisted(settings: Any) -> None:
    target = TargetFactory(kind="docker", docker_url="unix:///var/run/docker.sock")
    settings.HANGAR_DOCKER_SOCKETS = []
    assert_fixed(health_of(target), "misconfigured", "socket not in the allowlist")
    settings.HANGAR_DOCKER_SOCKETS = ["unix:///var/run/docker.sock"]
    assert health_of(target)["reason"] != "socket not in the allowlist"


def test_plain_tcp_only_when_the_settings_allow_it(listener: FakeAPI, settings: Any) -> None:
    target = TargetFactory(kind="docker", docker_url=f"tcp://127.0.0.1:{listener.port}")
    assert_fixed(health_of(target), "misconfigured", "TLS client certificate required")
    assert listener.connections == 0
    settings.HANGAR_DOCKER_ALLOW_PLAIN_TCP = True
    assert health_of(target)["status"] == "ok"
    assert listener.connections > 0


@pytest.mark.parametrize(
    "publish_host",
    ["evil@127.0.0.1", "127.0.0.1:80", "127.0.0.1/x", "a b", "user:pw@host", "0.0.0.0", "::", "169.254.169.254"],
)
def test_hostile_publish_hosts_are_refused(listener: FakeAPI, plain_tcp: None, publish_host: str) -> None:
    target = TargetFactory(kind="docker", docker_url=f"tcp://127.0.0.1:{listener.port}", publish_host=publish_host)
    with pytest.raises(PermanentDriverError) as refused:
        driver_for(target)
    assert refused.value.cause == "invalid publish host"
    assert_fixed(health_of(target), "misconfigured", "invalid publish host")
    assert listener.connections == 0


# ----------------------------------------------------------------------------- hostile daemons: ports


@pytest.mark.parametrize(
    "host_port",
    ["80@evil.example", "99999", "user:pw@host", "0", "-1", "8080/tcp", "\uff18\uff10\uff18\uff10", "", None, "80 "],
)
def test_a_hostile_daemons_host_port_builds_no_endpoint(plain_tcp: None, model_root: Path, host_port: Any) -> None:
    deployment_id = 990_100
    good = docker_container("good", deployment_id=deployment_id, instance=instance_name(), host_port="49153")
    bad = docker_container("bad", deployment_id=deployment_id, instance=instance_name(), host_port=host_port)
    with FakeAPI(docker_router(containers=[good, bad])) as daemon:
        target = TargetFactory(kind="docker", docker_url=f"tcp://127.0.0.1:{daemon.port}", publish_host="127.0.0.1")
        driver = driver_for(target)
        observed = {r.backend_id: r for r in driver.list(deployment_id)}
    assert observed["good"].endpoint == "http://127.0.0.1:49153"  # the same daemon, a sane port
    assert observed["bad"].endpoint == ""
    assert "no valid host port" in observed["bad"].detail


def test_a_hostile_daemons_ports_never_reach_the_replica_rows(plain_tcp: None, model_root: Path) -> None:
    """Through a reconcile pass: what the gateway would route to holds no daemon-chosen text."""
    with FakeAPI(docker_router()) as daemon:
        target = TargetFactory(kind="docker", docker_url=f"tcp://127.0.0.1:{daemon.port}")
        deployment = deployment_on(target, model_root, replicas=2, max_replicas=2)
        containers = [
            docker_container(
                f"c{slot}",
                deployment_id=deployment.pk,
                instance=instance_name(),
                host_port=port,
                name=f"chat-g1-{slot}",
            )
            for slot, port in enumerate(["80@evil.example", "user:pw@host"])
        ]
        daemon.router = docker_router(containers=containers)
        reconciler.reconcile(deployment.pk, owner="t")
    rows = list(Replica.objects.filter(deployment=deployment).values_list("name", "endpoint"))
    assert sorted(name for name, _ in rows) == ["chat-g1-0", "chat-g1-1"]
    assert all(endpoint == "" for _, endpoint in rows), rows
    said = everything_said(deployment)
    assert "evil.example" not in said and "pw@" not in said


# ----------------------------------------------------------------------------- hostile daemons: bodies


@pytest.mark.parametrize(
    "overrides, status, reason",
    [
        # A web server, not a daemon: the same page on every path.
        (
            {("GET", p): (200, LONG_BODY.encode()) for p in ("/_ping", "/version")},
            "misconfigured",
            "not a Docker daemon",
        ),
        ({("GET", "/version"): (404, {"message": LONG_BODY})}, "misconfigured", "not a Docker daemon"),
        ({("GET", "/version"): (500, {"message": LONG_BODY})}, "unreachable", "server error"),
        ({("GET", "/info"): (403, {"message": LONG_BODY})}, "refused", "access denied"),
        ({("GET", "/info"): (200, [LONG_BODY])}, "misconfigured", "not a Docker daemon"),
    ],
)
def test_health_checks_store_a_fixed_reason_never_the_answer(
    plain_tcp: None, overrides: dict[Any, Any], status: str, reason: str
) -> None:
    with FakeAPI(docker_router(overrides=overrides)) as daemon:
        target = TargetFactory(kind="docker", docker_url=f"tcp://127.0.0.1:{daemon.port}")
        health = health_of(target)
    assert health["reachable"] is False
    assert_fixed(health, status, reason)


def test_version_and_capacity_from_a_daemon_are_coerced(plain_tcp: None) -> None:
    version = {"Version": LONG_BODY, "ApiVersion": "1.43"}
    info = {"NCPU": LONG_BODY, "MemTotal": -5, "Runtimes": {}}
    overrides = {("GET", "/version"): (200, version), ("GET", "/info"): (200, info)}
    with FakeAPI(docker_router(overrides=overrides)) as daemon:
        health = health_of(TargetFactory(kind="docker", docker_url=f"tcp://127.0.0.1:{daemon.port}"))
    assert_fixed(health, "ok", "")
    assert (health["version"], health["api_version"], health["cpus"], health["memory_bytes"]) == ("", "1.43", 0, 0)


@pytest.mark.parametrize("code, phase", [(400, Phase.FAILED), (500, Phase.DEGRADED)])
def test_deployment_messages_never_quote_the_daemon(plain_tcp: None, model_root: Path, code: int, phase: str) -> None:
    overrides = {("POST", "/containers/create"): (code, {"message": LONG_BODY})}
    with FakeAPI(docker_router(overrides=overrides)) as daemon:
        target = TargetFactory(kind="docker", docker_url=f"tcp://127.0.0.1:{daemon.port}", name="gpu-box")
        deployment = deployment_on(target, model_root)
        reconciler.reconcile(deployment.pk, owner="t")
    assert any(s.method == "POST" and s.path == "/containers/create" for s in daemon.seen)
    d = Deployment.objects.get(pk=deployment.pk)
    assert d.phase == phase, d.phase_message
    assert f"HTTP {code}" in d.phase_message and "'gpu-box'" in d.phase_message
    said = everything_said(d)
    assert SECRET not in said and str(daemon.port) not in said


# ----------------------------------------------------------------------------- Kubernetes


def kubeconfig(user: dict[str, Any], cluster: dict[str, Any] | None = None) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster or {"server": "http://127.0.0.1:1"}}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )


@pytest.mark.parametrize(
    "user, cluster",
    [
        ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "touch", "args": ["{marker}"]}}, None),
        ({"auth-provider": {"name": "oidc", "config": {"id-token": "x"}}}, None),
        ({"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}, None),
        ({"client-certificate": "/etc/hangar/worker.crt", "client-key": "/etc/hangar/worker.key"}, None),
        ({"token": "t"}, {"server": "http://127.0.0.1:1", "certificate-authority": "/etc/ssl/private/ca.pem"}),
    ],
)
def test_kubeconfigs_that_reach_into_the_worker_are_refused(
    tmp_path: Path, user: dict[str, Any], cluster: dict[str, Any] | None
) -> None:
    marker = tmp_path / "ran"
    content = kubeconfig(json.loads(json.dumps(user).replace("{marker}", str(marker))), cluster)
    target = TargetFactory(kind="kubernetes", kube_auth="kubeconfig", credentials=encrypt_json({"kubeconfig": content}))
    assert_fixed(health_of(target), "misconfigured", "kubeconfig refers to worker files or commands")
    assert not marker.exists()


@pytest.mark.parametrize("content", ["", "{not yaml", "- a list", "users: 5"])
def test_unusable_kubeconfigs_are_misconfigured(content: str) -> None:
    creds = encrypt_json({"kubeconfig": content}) if content else ""
    target = TargetFactory(kind="kubernetes", kube_auth="kubeconfig", credentials=creds)
    health = health_of(target)
    assert health["status"] == "misconfigured" and health["reason"] in ("kubeconfig required", "invalid kubeconfig")


def test_kubernetes_without_an_auth_mode_uses_nothing_of_the_worker(tmp_path: Path, monkeypatch: Any) -> None:
    worker_config = tmp_path / "config"
    worker_config.write_text(kubeconfig({"token": "worker"}))
    monkeypatch.setenv("KUBECONFIG", str(worker_config))
    target = TargetFactory(kind="kubernetes", kube_auth="")
    assert_fixed(health_of(target), "misconfigured", "Kubernetes authentication not set")


def test_kubernetes_refusals_never_quote_the_api_server(model_root: Path) -> None:
    status = {
        "kind": "Status",
        "status": "Failure",
        "message": LONG_BODY,
        "reason": "Invalid",
        "details": {"causes": [{"field": "spec.template.spec.containers[0].image", "message": LONG_BODY}]},
        "code": 422,
    }

    def route(method: str, path: str, query: str, body: bytes) -> tuple[int, Any]:
        if method == "POST":
            return 422, status
        if method == "GET" and path.endswith(("/deployments", "/pods", "/events", "/services", "/secrets")):
            return 200, {"metadata": {}, "items": []}
        return 404, {"kind": "Status", "message": LONG_BODY, "code": 404}

    with FakeAPI(route) as api:
        content = kubeconfig({"token": "t"}, {"server": f"http://127.0.0.1:{api.port}"})
        target = TargetFactory(
            kind="kubernetes", kube_auth="kubeconfig", credentials=encrypt_json({"kubeconfig": content})
        )
        deployment = deployment_on(target, model_root)
        reconciler.reconcile(deployment.pk, owner="t")
        health = health_of(target)
    d = Deployment.objects.get(pk=deployment.pk)
    assert d.phase == Phase.FAILED
    assert "HTTP 422: spec.template.spec.containers[0].image" in d.phase_message
    assert SECRET not in everything_said(d)
    assert_fixed(health, "misconfigured", "not a Kubernetes API server")
