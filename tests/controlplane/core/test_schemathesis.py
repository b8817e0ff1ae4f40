"""Both OpenAPI documents hold against the real server: schemathesis with every check.

A uvicorn process serves ``console.asgi`` (the REST API under ``/api/`` and the gateway under
``/v1/``) on the test database (PostgreSQL); the test seeds a tenant, an owner with a personal
access token, a model, a deployment and a gateway API key, then runs the schemathesis CLI with a
fixed seed over ``/api/schema/`` and ``/v1/openapi.json``: examples, coverage, fuzzing and stateful
phases, ``--checks all``, a bounded number of examples per operation. Any failure fails the test
with schemathesis's own report of it.

The deployment has no replica, so completions answer the documented 503 (or 404 for another
model); the model list, key checks and every error answer are exercised for real.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.core.context import SYSTEM
from controlplane.deployments.choices import Phase
from controlplane.keys.services import api_key_create
from controlplane.tenancy.choices import Role
from controlplane.tenancy.services import access_token_create
from tests.conftest import REPO_ROOT
from tests.factories import DeploymentFactory, MembershipFactory, TenantFactory, UserFactory
from tests.support.ports import free_port
from tests.support.processes import Process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SEED = 20261130
MAX_EXAMPLES = int(os.environ.get("HANGAR_SCHEMATHESIS_EXAMPLES", "3"))  # per operation, phase and cycle
# Seconds per document. Schemathesis shares it between the phases (coverage first, then fuzzing and
# stateful cycles until it is spent), so the run fits the suite's budget on a slow machine too.
MAX_TIME_S = {"api": int(os.environ.get("HANGAR_SCHEMATHESIS_API_SECONDS", "110")), "gateway": 40}
CONFIG = Path(__file__).with_name("schemathesis.toml")
PHASES = "examples,coverage,fuzzing,stateful"
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


@dataclass
class Live:
    url: str
    access_token: str  # hgp_..., the tenant owner's
    api_key: str  # hgr_..., for the gateway


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def api_server(transactional_db: Any, tmp_path: Path) -> Iterator[str]:
    from django.db import connection

    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.controlplane.gateway.settings",
        "HANGAR_GATEWAY_TEST_DB": str(connection.settings_dict["NAME"]),
        "HANGAR_GATEWAY_REDIS_PREFIX": f"hangar:schemathesis:{uuid.uuid4().hex[:8]}:",
        "HANGAR_GATEWAY_COLD_START_TIMEOUT": "0.2",
        "PYTHONPATH": str(REPO_ROOT),
    }
    args = ["-m", "uvicorn", "console.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
    server = Process(
        "schemathesis-server",
        [sys.executable, *args, "--lifespan", "on", "--no-access-log", "--log-level", "warning"],
        log_path=tmp_path / "server.log",
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    with server.start():
        server.wait_ready(lambda: _answers(f"{url}/healthz"), 60, "the server answers")
        yield url


@pytest.fixture
def live(api_server: str) -> Live:
    tenant = TenantFactory(slug="acme")
    owner = UserFactory(username="owner")
    MembershipFactory(user=owner, tenant=tenant, role=Role.OWNER)
    DeploymentFactory(tenant=tenant, name="chat", served_model_name="chat", phase=Phase.RUNNING)
    _, access_token = access_token_create(
        actor=SYSTEM, user=owner, name="schemathesis", scopes=["read", "write", "admin"]
    )
    _, api_key = api_key_create(actor=SYSTEM, tenant=tenant, data={"name": "schemathesis"})
    return Live(url=api_server, access_token=access_token, api_key=api_key)


def run_schemathesis(schema_url: str, base_url: str, token: str, report: Path, max_time: int) -> tuple[int, str, float]:
    args = [
        SCHEMATHESIS,
        "--config-file",
        str(CONFIG),
        "run",
        schema_url,
        "--url",
        base_url,
        "--checks",
        "all",
        "--phases",
        PHASES,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--max-time",
        str(max_time),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--no-shrink",
        "--request-timeout",
        "10",
        "--header",
        f"Authorization: Bearer {token}",
        "--suppress-health-check",
        "all",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]
    started = time.monotonic()
    done = subprocess.run(
        args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=max_time + 180, env={**os.environ, "NO_COLOR": "1"}
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


@pytest.mark.parametrize("document", ["api", "gateway"])
def test_schemathesis_finds_nothing(live: Live, tmp_path: Path, document: str) -> None:
    if document == "api":
        schema_url, token = f"{live.url}/api/schema/?format=json", live.access_token
    else:
        schema_url, token = f"{live.url}/v1/openapi.json", live.api_key
    max_time = MAX_TIME_S[document]
    code, output, seconds = run_schemathesis(schema_url, live.url, token, tmp_path / "junit.xml", max_time)
    print(output[-20000:])
    print(f"schemathesis on {document}: {seconds:.1f} s")
    assert code == 0, output[-20000:]
