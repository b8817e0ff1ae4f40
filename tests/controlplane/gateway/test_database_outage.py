"""PostgreSQL stopped for 20 s under load: the gateway goes on serving from its cached keys,
limits and routes, a key revoked just before the outage stays refused, a key never seen
answers 503 (not 401), usage is buffered and written exactly once when the database is back,
and the REST API and dashboard answer 503 with ``Retry-After`` (JSON under ``/api/``).

Its own throwaway PostgreSQL cluster (the shared one must stay up), a real web process
(uvicorn on ``console.asgi``: gateway, REST API and dashboard in one) and a stub replica.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.controlplane.gateway.conftest import auth, metric_value, start_gateway, start_stub
from tests.support.ports import free_port
from tests.support.waiting import wait_for, wait_for_async

pytestmark = pytest.mark.slow

PG_BIN = Path(os.environ.get("HANGAR_PG_BIN", "/usr/lib/postgresql/15/bin"))
CLIENTS = 16
LOAD_SECONDS = 40.0
OUTAGE_AT = 10.0  # seconds into the load
OUTAGE_SECONDS = 20.0
STALE_KEYS = 'hangar_gateway_key_cache_total{result="stale"}'
BODY = {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4}


class Cluster:
    """A PostgreSQL cluster of this test's own, in a temporary directory, that it may stop."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hangar-outage-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:  # initdb refuses root: run the cluster as the postgres OS user
            shutil.chown(self.root, "postgres", "postgres")
        self.root.chmod(0o700)
        self.url = f"postgres://hangar:hangar@127.0.0.1:{self.port}/hangar_outage"

    def run(self, *args: str) -> str:
        command = [str(PG_BIN / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{args[0]} failed: {done.stdout}{done.stderr}"
        return done.stdout

    def create(self) -> None:
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8",
                 "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")  # fmt: skip
        self.start()
        self.psql("CREATE ROLE hangar LOGIN PASSWORD 'hangar'")
        self.psql("CREATE DATABASE hangar_outage OWNER hangar")

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} -c fsync=off"
        )
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "30", "start", "-o", options)

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self.run("psql", "-h", str(self.root), "-p", str(self.port), "-U", "postgres", "-d", database,
                        "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql)  # fmt: skip

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*(["runuser", "-u", "postgres", "--"] if self.as_root else []), str(PG_BIN / "pg_ctl"),
                 "-D", str(self.data), "-m", "immediate", "stop"],
                capture_output=True,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Load:
    """What the clients saw: (seconds into the load, status, tokens) per request."""

    results: list[tuple[float, int, int]] = field(default_factory=list)

    @property
    def served(self) -> int:
        return sum(1 for _, status, _ in self.results if status == 200)

    @property
    def tokens(self) -> int:
        return sum(tokens for _, _, tokens in self.results)

    def failures(self) -> list[tuple[float, int, int]]:
        return [r for r in self.results if r[1] != 200]


async def client_loop(client: httpx.AsyncClient, token: str, deadline: float, t0: float, load: Load) -> None:
    while time.monotonic() < deadline:
        tokens = 0
        try:
            response = await client.post("/v1/chat/completions", json=BODY, headers=auth(token))
            status = response.status_code
            if status == 200:
                tokens = int(response.json()["usage"]["total_tokens"])
        except httpx.HTTPError:
            status = 0
        load.results.append((time.monotonic() - t0, status, tokens))


def usage_of(client: httpx.Client, user_token: str, key_id: int) -> dict[str, int]:
    response = client.get("/api/v1/usage/totals/", params={"api_key": key_id}, headers=auth(user_token))
    assert response.status_code == 200, response.text
    rows = response.json()["results"]
    if not rows:
        return {"requests": 0, "errors": 0, "tokens": 0}
    row = rows[0]
    return {
        "requests": row["requests"],
        "errors": row["errors"],
        "tokens": row["prompt_tokens"] + row["completion_tokens"],
    }


@pytest.fixture
def cluster() -> Any:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL binaries in {PG_BIN}")
    cluster = Cluster()
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.destroy()


def test_gateway_and_console_through_a_database_outage(cluster: Cluster) -> None:
    stub = start_stub(tokens=4)
    env = {**os.environ, "DATABASE_URL": cluster.url, "DJANGO_SETTINGS_MODULE": "console.settings.test"}
    seeded = subprocess.run(
        [sys.executable, "-m", "tests.controlplane.gateway.outage_seed", stub.url],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert seeded.returncode == 0, seeded.stderr[-3000:]
    seed = json.loads(seeded.stdout.strip().splitlines()[-1])
    served_key, revoked_key, unseen_key = (seed["keys"][name] for name in ("served", "revoked", "unseen"))
    user_token = seed["user_token"]
    # Keys are read again from the database every 3 s: most of the outage runs on last known keys.
    server = start_gateway(
        "hangar_outage", extra_env={"DATABASE_URL": cluster.url, "HANGAR_GATEWAY_KEY_CACHE_SECONDS": "3"}
    )
    try:
        figures = asyncio.run(drive(server.url, cluster, user_token, served_key, revoked_key, unseen_key))
        load: Load = figures["load"]
        with httpx.Client(base_url=server.url, timeout=10) as api:
            # Buffered usage reaches the database once it is back...
            def metered() -> dict[str, int] | None:
                usage = usage_of(api, user_token, served_key["id"])
                return usage if usage["requests"] - usage["errors"] >= load.served else None

            wait_for(metered, 20, f"usage written for the {load.served} served", interval=0.2)
        # ...and exactly once: the final flush at shutdown adds nothing twice.
        server.stop()
        row = cluster.psql(
            "SELECT coalesce(sum(requests), 0), coalesce(sum(errors), 0), "
            "coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage_usagerecord "
            f"WHERE api_key_id = {int(served_key['id'])}",
            database="hangar_outage",
        )
        requests, errors, tokens = (int(v) for v in row.strip().split("|"))
        failures = load.failures()
        during = [r for r in load.results if figures["down"] <= r[0] <= figures["up"]]
        print(
            f"\ndatabase outage {figures['up'] - figures['down']:.1f} s under {CLIENTS} clients: "
            f"{len(load.results)} requests ({len(during)} during the outage), {load.served} served, "
            f"{len(failures)} failed {sorted({r[1] for r in failures})}; metered {requests} requests "
            f"({errors} errors), {tokens} tokens for {load.tokens} tokens served"
        )
        assert len(during) > 100, "too little load during the outage to judge"
        assert load.served >= 0.99 * len(load.results), failures[:20]
        assert requests - errors == load.served
        assert errors <= len(failures)
        assert tokens == load.tokens
    finally:
        server.stop()
        stub.stop()


async def drive(
    url: str, cluster: Cluster, user_token: str, served_key: dict[str, Any], revoked_key: dict[str, Any],
    unseen_key: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    limits = httpx.Limits(max_connections=CLIENTS + 8, max_keepalive_connections=CLIENTS + 8)
    async with httpx.AsyncClient(base_url=url, timeout=15, limits=limits) as client:
        load = Load()
        for token in (served_key["token"], revoked_key["token"]):  # both keys known to the gateway
            response = await client.post("/v1/chat/completions", json=BODY, headers=auth(token))
            assert response.status_code == 200, response.text
            if token == served_key["token"]:  # metered like the load's requests
                load.results.append((0.0, 200, int(response.json()["usage"]["total_tokens"])))
        assert (await client.get("/api/v1/deployments/", headers=auth(user_token))).status_code == 200

        t0 = time.monotonic()
        clients = [
            asyncio.create_task(client_loop(client, served_key["token"], t0 + LOAD_SECONDS, t0, load))
            for _ in range(CLIENTS)
        ]
        await asyncio.sleep(OUTAGE_AT)  # pacing: the load's schedule, not a wait for a condition
        response = await client.post(f"/api/v1/keys/{revoked_key['id']}/revoke/", headers=auth(user_token))
        assert response.status_code == 200, response.text
        await asyncio.to_thread(cluster.stop)
        down = time.monotonic() - t0

        # Past the 3 s key cache, keys cannot be read again: answers come from last known keys.
        await wait_for_async(
            lambda: asyncio.to_thread(metric_value, url, STALE_KEYS), 15, "keys answered from last known", interval=0.2
        )
        revoked = await client.post("/v1/chat/completions", json=BODY, headers=auth(revoked_key["token"]))
        assert revoked.status_code == 401, revoked.text
        assert revoked.json()["error"]["code"] == "api_key_revoked"
        unseen = await client.post("/v1/chat/completions", json=BODY, headers=auth(unseen_key["token"]))
        assert unseen.status_code == 503, unseen.text
        assert int(unseen.headers["Retry-After"]) > 0
        api = await client.get("/api/v1/deployments/", headers=auth(user_token))
        assert api.status_code == 503, api.text
        assert api.headers["Content-Type"] == "application/json"
        assert api.json()["code"] == "database_unavailable"
        assert int(api.headers["Retry-After"]) > 0
        page = await client.get("/", headers={"Cookie": "sessionid=" + "x" * 32})
        assert page.status_code == 503, page.text[:500]
        assert page.headers["Content-Type"].startswith("text/html")
        assert "Traceback" not in page.text and int(page.headers["Retry-After"]) > 0
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503

        await asyncio.sleep(max(0.0, t0 + down + OUTAGE_SECONDS - time.monotonic()))  # pacing: the outage's length
        await asyncio.to_thread(cluster.start)
        up = time.monotonic() - t0
        await asyncio.gather(*clients)

        api = await client.get("/api/v1/deployments/", headers=auth(user_token))
        assert api.status_code == 200, api.text
        assert (await client.get("/readyz")).status_code == 200
        unseen = await client.post("/v1/chat/completions", json=BODY, headers=auth(unseen_key["token"]))
        assert unseen.status_code == 200, unseen.text
        revoked = await client.post("/v1/chat/completions", json=BODY, headers=auth(revoked_key["token"]))
        assert revoked.status_code == 401, revoked.text
    return {"load": load, "down": down, "up": up}
