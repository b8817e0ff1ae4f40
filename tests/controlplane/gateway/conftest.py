"""Servers for the gateway tests: a stub upstream, the real runtime with the tiny model, and
gateway processes (uvicorn on ``console.asgi``) that read the test database."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.deployments.choices import Phase, ReplicaState
from tests.conftest import REPO_ROOT, claim_test_database
from tests.factories import ApiKeyFactory, DeploymentFactory, ReplicaFactory, TenantFactory
from tests.support.ports import free_port
from tests.support.processes import Process, http_ok

PYTHON = sys.executable
RUN_ID = uuid.uuid4().hex[:8]


class Server(Process):
    """A server process on 127.0.0.1:``port``, ready once ``ready_path`` answers below 500."""

    def __init__(self, name: str, argv: list[str], port: int, **options: Any) -> None:
        super().__init__(name, argv, **options)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def serve(self, ready_path: str, timeout: float) -> Server:
        self.start()
        try:
            self.wait_ready(lambda: http_ok(self.url + ready_path, below=500), timeout, f"{ready_path} answering")
        except BaseException:
            self.stop()
            raise
        return self


def scrape_headers() -> dict[str, str]:
    """What Prometheus sends to a web process's ``/metrics`` (the test settings' scrape token)."""
    from django.conf import settings

    return {"Authorization": f"Bearer {settings.HANGAR_METRICS_TOKEN}"}


def metric_value(url: str, name: str) -> float | None:
    """The value of the sample ``name`` (with its labels, as exposed) at ``url``/metrics."""
    for line in httpx.get(f"{url}/metrics", headers=scrape_headers(), timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: Any) -> None:
    """A test database of its own, so gateway runs do not collide with other suites' runs."""
    from django.conf import settings

    # Named after the configured database, so that two checkouts (hangar_a, hangar_b) never share it.
    database = settings.DATABASES["default"]
    # Each pytest-xdist worker has its own (as pytest-django's suffix would give it).
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    database.setdefault("TEST", {})["NAME"] = f"test_{database['NAME']}_gateway" + (f"_{worker}" if worker else "")
    claim_test_database()


def start_stub(**options: Any) -> Server:
    port = free_port()
    args = [PYTHON, str(REPO_ROOT / "bench" / "stub_upstream.py"), "--port", str(port)]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return Server(f"stub-{port}", args, port).serve("/health", 15)


@pytest.fixture(scope="session")
def stub_upstream() -> Iterator[Server]:
    server = start_stub(tokens=8)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def runtime_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real model runtime serving the tiny model as ``tiny``."""
    port = free_port()
    argv = [PYTHON, "-m", "workers.runtime", "--model", str(tiny_model_dir), "--port", str(port)]
    argv += ["--host", "127.0.0.1", "--served-model-name", "tiny"]
    log_path = tmp_path_factory.mktemp("runtime") / "runtime.log"
    server = Server("runtime", argv, port, log_path=log_path).start()
    try:
        server.wait_ready(lambda: http_ok(server.url + "/health"), 180, "/health answering 200", interval=0.2)
        yield server
    finally:
        server.stop()


def start_gateway(
    db_name: str,
    *,
    redis_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    log_path: Path | None = None,
) -> Server:
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.controlplane.gateway.settings",
            "HANGAR_GATEWAY_TEST_DB": db_name,
            "HANGAR_GATEWAY_REDIS_PREFIX": f"hangar:gwtest:{RUN_ID}:",
            **(extra_env or {}),
        }
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    argv = [
        PYTHON,
        "-m",
        "uvicorn",
        "console.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--lifespan",
        "on",
        "--no-access-log",
        "--log-level",
        "debug" if log_path else "warning",
    ]
    return Server(f"gateway-{port}", argv, port, env=env, log_path=log_path).serve("/metrics", 30)


@pytest.fixture(scope="session")
def gateway_db_name(django_db_setup: Any, django_db_blocker: Any) -> str:
    from django.db import connection

    return str(connection.settings_dict["NAME"])


@pytest.fixture(scope="session")
def gateway(gateway_db_name: str) -> Iterator[Server]:
    """One gateway process for the session, serving on a free port."""
    server = start_gateway(gateway_db_name)
    yield server
    server.stop()


@pytest.fixture
def make_key(transactional_db: Any) -> Callable[..., tuple[Any, str]]:
    def make(tenant: Any = None, **data: Any) -> tuple[Any, str]:
        data.setdefault("name", "test key")
        key = ApiKeyFactory(tenant=tenant or TenantFactory(), **data)
        return key, key.secret

    return make


@pytest.fixture
def serve_model(transactional_db: Any) -> Callable[..., Any]:
    """``serve_model(tenant, name, *endpoints, **deployment fields)`` -> a Running deployment."""

    def make(tenant: Any, name: str, *endpoints: str, **fields: Any) -> Any:
        fields.setdefault("phase", Phase.RUNNING)
        deployment = DeploymentFactory(tenant=tenant, served_model_name=name, **fields)
        for endpoint in endpoints:
            ReplicaFactory(deployment=deployment, endpoint=endpoint, state=ReplicaState.READY)
        return deployment

    return make


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
