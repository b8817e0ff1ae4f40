"""Replicas sealed off, tried the way a hostile tenant would try them.

Two positions an attacker can hold: code inside a replica (a tenant admin's model with its own
Python, or any bug in the runtime) reading what the process was given, and a network position
next to a replica's port, calling it directly to skip the gateway's keys, limits and metering.
Replicas are started for real (the reconciler with the local driver and the real runtime, and
the real Docker daemon with the runtime image); the gateway is a real server process.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connection

from controlplane.core.context import SYSTEM
from controlplane.deployments import services
from controlplane.deployments.choices import Phase, ReplicaState
from controlplane.deployments.models import Deployment, MetricSample, Replica
from controlplane.deployments.replica_auth import replica_token
from tests.controlplane.gateway.conftest import Server, start_gateway
from tests.factories import ApiKeyFactory, DeploymentFactory, ModelFactory, ReplicaFactory, TargetFactory, TenantFactory
from tests.support.processes import REPO_ROOT
from tests.support.waiting import wait_for
from tests.support.workers import redis_url
from tests.workers.docker_support import DOCKER_URL, docker_or_fail
from workers import metrics, reconciler
from workers.drivers import instance_name, local_driver
from workers.drivers.base import LABEL_DEPLOYMENT, LABEL_INSTANCE
from workers.drivers.local import LocalDriver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "temperature": 0}


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def worker_environment(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process plays the worker: its environment holds the control plane's secrets, as a
    production worker's does (settings come from the environment there). Returns them by name."""
    settings.DATA_DIR = tmp_path / "data"
    secrets = {
        "HANGAR_SECRET_KEY": settings.SECRET_KEY,
        "HANGAR_KEY_PEPPER": settings.HANGAR_KEY_PEPPER,
        "HANGAR_ENCRYPTION_KEYS": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": redis_url(14),
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    return secrets


def deploy(model_dir: Path, *, kind: str = "local", name: str = "chat", **target: Any) -> Deployment:
    tenant = TenantFactory()
    model = ModelFactory(tenant=tenant, source=str(model_dir))
    target_row = TargetFactory(tenant=tenant, kind=kind, **target)
    return services.deployment_create(
        actor=SYSTEM, tenant=tenant, model=model, target=target_row, data={"name": name, "replicas": 1, "cpus": 2.0}
    )


def reconcile_until_running(deployment: Deployment, timeout: float = 180) -> Replica:
    """In-process reconcile passes (as the worker's task runs them) until the replica is ready."""

    def running() -> bool:
        reconciler.reconcile(deployment.pk, owner="sealing-test")
        row = Deployment.objects.get(pk=deployment.pk)
        assert row.phase != Phase.FAILED, row.phase_message
        return row.phase == Phase.RUNNING

    wait_for(running, timeout=timeout, interval=0.3, message="deployment Running")
    return Replica.objects.get(deployment=deployment, state=ReplicaState.READY)


def delete(deployment: Deployment) -> None:
    services.deployment_delete(actor=SYSTEM, deployment=deployment)

    def gone() -> bool:
        reconciler.reconcile(deployment.pk, owner="sealing-test")
        return not Deployment.objects.filter(pk=deployment.pk).exists()

    wait_for(gone, timeout=60, interval=0.3, message="deployment deleted")


def leaked(secrets: dict[str, str], blob: str | bytes) -> list[str]:
    """Names of the secrets whose value (or whose variable name) appears in ``blob``."""
    text = blob.decode(errors="replace") if isinstance(blob, bytes) else blob
    return [name for name, value in secrets.items() if value in text or f"{name}=" in text]


def forged_token(deployment_id: int, secret_key: str) -> str:
    """What an attacker who guessed the derivation but not the key would send."""
    from django.test import override_settings

    with override_settings(SECRET_KEY=secret_key):
        return replica_token(deployment_id)


def attack_directly(endpoint: str, deployment: Deployment, *, other_deployment_id: int) -> None:
    """Everything someone next to the replica's port would try: nothing but the token works."""
    model = deployment.served_model_name
    chat = {"model": model, **CHAT}
    attempts: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer undefined"},
        {"Authorization": f"Bearer {replica_token(other_deployment_id)}"},  # another deployment's
        {"Authorization": f"Bearer {forged_token(deployment.pk, 'a-guessed-secret-key')}"},
        {"Authorization": f"Basic {base64.b64encode(b'hangar:' + replica_token(deployment.pk).encode()).decode()}"},
        {"X-Hangar-Token": replica_token(deployment.pk)},
    ]
    for headers in attempts:
        for method, path, body in (
            ("POST", "/v1/chat/completions", chat),
            ("POST", "/v1/completions", {"model": model, "prompt": "hi", "max_tokens": 2}),
            ("GET", "/v1/models", None),
            ("GET", "/metrics", None),
        ):
            answer = httpx.request(method, endpoint + path, json=body, headers=headers, timeout=30)
            assert answer.status_code == 401, (path, headers, answer.status_code, answer.text[:200])
            assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    # /health stays open (and says nothing but the phase).
    health = httpx.get(endpoint + "/health", timeout=5)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    # The deployment's own token opens the API.
    good = {"Authorization": f"Bearer {replica_token(deployment.pk)}"}
    assert httpx.post(endpoint + "/v1/chat/completions", json=chat, headers=good, timeout=60).status_code == 200
    assert "hangar_runtime_requests_total" in httpx.get(endpoint + "/metrics", headers=good, timeout=10).text


# ----------------------------------------------------------------------------- local replicas


def test_a_local_replica_holds_no_control_plane_secret_and_answers_only_its_token(
    transactional_db: Any, worker_environment: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    deployment = deploy(tiny_model_dir)
    replica = reconcile_until_running(deployment)
    driver = local_driver()
    assert isinstance(driver, LocalDriver)
    [observed] = driver.list(deployment.pk)
    state = driver._read_state(driver._state_path(observed.backend_id))
    assert state is not None
    pid = int(state["pid"])
    token = replica_token(deployment.pk)

    # Code inside the replica reads its own environment and command line.
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert leaked(worker_environment, environ) == []
    assert leaked(worker_environment, cmdline) == []
    for name in (b"DJANGO_SETTINGS_MODULE=", b"DATABASE_URL=", b"REDIS_URL=", b"HANGAR_RUNTIME_TOKEN="):
        assert name not in environ, name
    assert token.encode() not in environ and token.encode() not in cmdline
    # Its token sits in a file only its own user may read.
    token_file = Path(cmdline.split(b"\0")[cmdline.split(b"\0").index(b"--token-file") + 1].decode())
    assert token_file.read_text() == token and token_file.stat().st_mode & 0o777 == 0o600

    # Someone who reaches the port directly.
    attack_directly(replica.endpoint, deployment, other_deployment_id=deployment.pk + 1)

    # The metrics scraper presents the token: the replica's figures arrive.
    assert metrics.scrape_once()["replicas"] >= 1
    assert MetricSample.objects.filter(replica=replica).exists()

    delete(deployment)
    assert not token_file.exists()


def test_the_gateway_serves_a_sealed_replica_end_to_end(
    transactional_db: Any, worker_environment: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    deployment = deploy(tiny_model_dir, name="tiny")
    replica = reconcile_until_running(deployment)
    api_key = ApiKeyFactory(tenant=deployment.tenant, name="client").secret
    gateway = start_gateway(str(connection.settings_dict["NAME"]), log_path=tmp_path / "gateway.log")
    try:
        chat = {"model": deployment.served_model_name, **CHAT}
        through = httpx.post(
            f"{gateway.url}/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {api_key}"}, timeout=60
        )
        assert through.status_code == 200, through.text
        assert through.json()["usage"]["completion_tokens"] == 2
        # The same request straight to the replica, with the client's own key: refused.
        direct = httpx.post(
            f"{replica.endpoint}/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {api_key}"}
        )
        assert direct.status_code == 401
    finally:
        gateway.stop()
        delete(deployment)


# ----------------------------------------------------------------------------- what the gateway sends


class RecordingUpstream:
    """An OpenAI-speaking upstream that records the headers of every request it gets; answers
    401 (as a replica with another token would) when ``refuse`` is set."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.refuse = False
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream.seen.append({k.lower(): v for k, v in self.headers.items()})
                if upstream.refuse:
                    body = b'{"error": {"message": "no", "type": "invalid_request_error", "param": null, "code": "x"}}'
                    self.send_response(401)
                else:
                    body = json.dumps(
                        {
                            "id": "chatcmpl-rec",
                            "object": "chat.completion",
                            "created": 0,
                            "model": "rec",
                            "choices": [
                                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                            ],
                            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                        }
                    ).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream()
    yield server
    server.close()


@pytest.fixture
def gateway(transactional_db: Any, tmp_path: Path) -> Iterator[Server]:
    server = start_gateway(str(connection.settings_dict["NAME"]), log_path=tmp_path / "gateway.log")
    yield server
    server.stop()


def test_the_gateway_presents_the_replica_token_and_keeps_the_clients_credentials(
    gateway: Server, upstream: RecordingUpstream
) -> None:
    tenant = TenantFactory()
    deployment = DeploymentFactory(tenant=tenant, served_model_name="rec", phase=Phase.RUNNING)
    ReplicaFactory(deployment=deployment, endpoint=upstream.url, state=ReplicaState.READY)
    api_key = ApiKeyFactory(tenant=tenant, name="client").secret
    client_headers = {
        "Authorization": f"Bearer {api_key}",
        "Cookie": "sessionid=the-clients-session; csrftoken=abc",
        "X-Api-Key": api_key,
        "Proxy-Authorization": "Basic dXNlcjpwYXNz",
        "OpenAI-Organization": "org-client",
        "X-Forwarded-For": "10.9.8.7",
    }
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions", json={"model": "rec", **CHAT}, headers=client_headers, timeout=30
    )
    assert answer.status_code == 200, answer.text
    [seen] = upstream.seen
    assert seen["authorization"] == f"Bearer {replica_token(deployment.pk)}"
    assert not [name for name, value in seen.items() if api_key in value or "the-clients-session" in value]
    for name in ("cookie", "x-api-key", "proxy-authorization", "openai-organization", "x-forwarded-for"):
        assert name not in seen, name

    # A replica that refuses the gateway's credential is the platform's fault, not the client's:
    # the client is not told that its key is invalid.
    upstream.refuse = True
    refused = httpx.post(
        f"{gateway.url}/v1/chat/completions", json={"model": "rec", **CHAT}, headers=client_headers, timeout=30
    )
    # Every replica refused: a 502 upstream error (retry later), never the client's 401.
    assert refused.status_code == 502, refused.text
    assert refused.json()["error"]["code"] == "upstream_error"


# ----------------------------------------------------------------------------- Docker replicas


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    client = docker_or_fail()
    # Built (or refreshed from the layer cache in seconds) so that the image has this runtime.
    proc = subprocess.run(
        [str(REPO_ROOT / "deploy" / "images" / "build")], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    yield client
    client.close()


@pytest.mark.docker
def test_a_docker_replica_holds_no_control_plane_secret_and_answers_only_its_token(
    transactional_db: Any, worker_environment: dict[str, str], tiny_model_dir: Path, docker_client: Any
) -> None:
    for path in [tiny_model_dir, *tiny_model_dir.rglob("*")]:  # readable by the image's user
        path.chmod(0o755 if path.is_dir() else 0o644)
    deployment = deploy(tiny_model_dir, kind="docker", docker_url=DOCKER_URL)
    # Other installations (test databases) on this daemon have deployments with the same id.
    ours = [f"{LABEL_INSTANCE}={instance_name()}", f"{LABEL_DEPLOYMENT}={deployment.pk}"]
    try:
        replica = reconcile_until_running(deployment)
        [container] = docker_client.containers.list(all=True, filters={"label": ours})
        container.reload()
        env = container.attrs["Config"]["Env"]
        assert leaked(worker_environment, "\n".join(env)) == []
        names = {entry.split("=", 1)[0] for entry in env}
        assert not names & {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "CELERY_BROKER_URL"}
        assert not [n for n in names if "SECRET" in n or "PEPPER" in n or n.endswith("_KEY") or "KEYS" in n]
        # What the process inside sees (the model's own code would read the same).
        inside = container.exec_run(["cat", "/proc/1/environ"]).output
        assert leaked(worker_environment, inside) == []
        attack_directly(replica.endpoint, deployment, other_deployment_id=deployment.pk + 1)
    finally:
        delete(deployment)
    assert not docker_client.containers.list(all=True, filters={"label": ours})


def test_settings_secrets_are_distinct_enough_to_detect_a_leak(settings: Any) -> None:
    # The leak checks above compare values: they could not fail if a value were empty or trivial.
    for value in (settings.SECRET_KEY, settings.HANGAR_KEY_PEPPER, os.environ["DATABASE_URL"], settings.REDIS_URL):
        assert len(value) >= 16, value
