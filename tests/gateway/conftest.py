"""Servers for the gateway tests: a stub upstream, the real runtime with the tiny model, and
gateway processes (uvicorn on ``console.asgi``) that read the test database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.core.context import SYSTEM
from controlplane.deployments.choices import Phase, ReplicaState
from controlplane.keys.services import api_key_create
from tests.conftest import REPO_ROOT, claim_test_database
from tests.factories import DeploymentFactory, ReplicaFactory, TenantFactory

PYTHON = sys.executable
RUN_ID = uuid.uuid4().hex[:8]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    port: int


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: Any) -> None:
    """A test database of its own, so gateway runs do not collide with other suites' runs."""
    from django.conf import settings

    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = "test_hangar_gateway"
    claim_test_database()


def start_stub(**options: Any) -> Server:
    port = free_port()
    args = [PYTHON, str(REPO_ROOT / "bench" / "stub_upstream.py"), "--port", str(port)]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    proc = subprocess.Popen(args, cwd=REPO_ROOT)
    wait_http(f"http://127.0.0.1:{port}/health", 15, proc)
    return Server(f"http://127.0.0.1:{port}", proc, port)


@pytest.fixture(scope="session")
def stub_upstream() -> Iterator[Server]:
    server = start_stub(tokens=8)
    yield server
    stop(server.proc)


@pytest.fixture(scope="session")
def runtime_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real model runtime serving the tiny model as ``tiny``."""
    port = free_port()
    log = tmp_path_factory.mktemp("runtime") / "runtime.log"
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "workers.runtime",
            "--model",
            str(tiny_model_dir),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--served-model-name",
            "tiny",
        ],
        cwd=REPO_ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"runtime exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop(proc)
            raise TimeoutError("runtime did not become ready")
        time.sleep(0.2)
    yield Server(f"http://127.0.0.1:{port}", proc, port)
    stop(proc)


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
            "DJANGO_SETTINGS_MODULE": "tests.gateway.settings",
            "HANGAR_GATEWAY_TEST_DB": db_name,
            "HANGAR_GATEWAY_REDIS_PREFIX": f"hangar:gwtest:{RUN_ID}:",
            **(extra_env or {}),
        }
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    proc = subprocess.Popen(
        [
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
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=log_path.open("ab") if log_path else None,
        stderr=subprocess.STDOUT if log_path else None,
    )
    wait_http(f"http://127.0.0.1:{port}/metrics", 30, proc)
    return Server(f"http://127.0.0.1:{port}", proc, port)


@pytest.fixture(scope="session")
def gateway_db_name(django_db_setup: Any, django_db_blocker: Any) -> str:
    from django.db import connection

    return str(connection.settings_dict["NAME"])


@pytest.fixture(scope="session")
def gateway(gateway_db_name: str) -> Iterator[Server]:
    """One gateway process for the session, serving on a free port."""
    server = start_gateway(gateway_db_name)
    yield server
    stop(server.proc)


@pytest.fixture
def make_key(transactional_db: Any) -> Callable[..., tuple[Any, str]]:
    def make(tenant: Any = None, **data: Any) -> tuple[Any, str]:
        tenant = tenant or TenantFactory()
        data.setdefault("name", "test key")
        return api_key_create(actor=SYSTEM, tenant=tenant, data=data)

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
