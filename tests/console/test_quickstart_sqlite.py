"""The embedded default holds under load: ``manage.py quickstart`` (SQLite, its own Redis, the
local driver) serves concurrent API writes while its worker reconciles and its beat schedules,
all on one SQLite file, without "database is locked" anywhere.

The quickstart runs as a user starts it (``make run``): a real process that migrates, bootstraps
the demo and starts web (uvicorn), a Celery worker and beat. Client threads then create, change,
scale, restart and delete deployments through the REST API with a personal access token, and
read them, for ``LOAD_SECONDS``. Every answer must be a success or a documented refusal (never a
5xx), and no log of any process may mention a locked database. Replicas are started by the local
driver for real, from a light stand-in of the model server (``tests/console/stub_runtime.py``),
so the worker's replica, health and metric writes run alongside the API's.

Figures (requests, writes, statuses, duration) are written to ``artifacts/console/quickstart_sqlite.json``.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.support.ports import free_port
from tests.support.processes import Process

# The timeout is a safety net for a loaded machine; on an idle one the test takes about 70 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LOAD_SECONDS = float(os.environ.get("HANGAR_TEST_SQLITE_LOAD_SECONDS", "55"))
CLIENTS = 4  # threads writing at once, each with its own connection
OWN_DEPLOYMENTS = 3  # each client keeps up to this many deployments alive
ADMIN_PASSWORD = "soak-admin-password-3f9c"
ARTIFACT = REPO_ROOT / "artifacts" / "console" / "quickstart_sqlite.json"
LOCKED = ("database is locked", "database table is locked")
DATABASE_ERROR = "OperationalError"  # what Django raises for a locked (or otherwise failing) SQLite
# Answers a client may get besides success: a change racing a delete of the same deployment.
REFUSALS = {409}


# ----------------------------------------------------------------------------- the quickstart


class Quickstart:
    """``manage.py quickstart`` in its own session, with a data directory of its own."""

    def __init__(self, data_dir: Path, model_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = data_dir / "quickstart.out"
        self.env = quickstart_env(data_dir, model_dir, self.port)
        self.process = Process(
            "quickstart", [sys.executable, "manage.py", "quickstart"], log_path=self.output, env=self.env
        )

    def start(self) -> Quickstart:
        self.process.start()
        self.process.wait_ready(
            lambda: "Hangar is running" in self.output.read_text(errors="replace"),
            timeout=120,
            message="printing 'Hangar is running'",
        )
        return self

    def stop(self) -> None:
        """SIGTERM, as Ctrl-C would: the quickstart stops web, worker, beat, Redis and its replicas."""
        if self.process.proc is not None:
            self.process.stop(grace=60)

    def logs(self) -> dict[str, str]:
        files = [self.output, *sorted((self.data_dir / "logs").glob("*.log"))]
        return {path.name: path.read_text(errors="replace") for path in files if path.is_file()}


def quickstart_env(data_dir: Path, model_dir: Path, port: int) -> dict[str, str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HANGAR_", "DJANGO_", "DATABASE_", "REDIS_", "CELERY_", "PROMETHEUS_"))
    }
    return inherited | {
        "DJANGO_SETTINGS_MODULE": "console.settings.local",
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
        "HANGAR_DATA_DIR": str(data_dir),  # the SQLite file: data_dir/hangar.sqlite3
        "HANGAR_MODEL_ROOTS": str(model_dir.parent.parent),
        "HANGAR_DEMO_MODEL_DIR": str(model_dir),
        "HANGAR_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "HANGAR_PORT": str(port),
        "HANGAR_LOCAL_RUNTIME_MODULE": "tests.console.stub_runtime",
        "HANGAR_INSTANCE": f"sqlite-soak-{os.getpid()}",
        # Busier than the defaults, so the worker and beat write as much as they can meanwhile.
        "HANGAR_RESYNC_INTERVAL": "1",
        "HANGAR_METRICS_INTERVAL": "0.5",
        # One token drives every client, far past the REST throttles' defaults (600/min): this
        # test is about SQLite taking concurrent writes, so the throttles must not shed them.
        "HANGAR_API_RATE_USER": "100000/min",
        "HANGAR_API_RATE_TOKEN": "100000/min",
    }


def access_token(url: str) -> str:
    """Sign in as the quickstart's admin and create a personal access token, as a user would."""
    with httpx.Client(base_url=url, timeout=30) as browser:
        browser.get("/login/")
        csrf = browser.cookies["csrftoken"]
        signed_in = browser.post(
            "/login/", data={"username": "admin", "password": ADMIN_PASSWORD, "csrfmiddlewaretoken": csrf}
        )
        assert signed_in.status_code == 302, signed_in.text[:500]
        created = browser.post(
            "/api/v1/tokens/",
            json={"name": "sqlite-soak", "scopes": ["write"]},
            headers={"X-CSRFToken": browser.cookies["csrftoken"]},
        )
        assert created.status_code == 201, created.text[:500]
        return str(created.json()["token"])


# ----------------------------------------------------------------------------- the load


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    writes: int = 0
    reads: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, op: str, response: httpx.Response, *, write: bool, expected: set[int]) -> None:
        with self.lock:
            self.statuses[f"{op} {response.status_code}"] += 1
            if write:
                self.writes += 1
            else:
                self.reads += 1
            if response.status_code not in expected | REFUSALS or any(t in response.text for t in LOCKED):
                self.failures.append(f"{op} -> {response.status_code}: {response.text[:300]}")


class Client(threading.Thread):
    """One API client: keeps a few deployments of its own and changes them at random."""

    def __init__(self, number: int, url: str, token: str, refs: dict[str, int], tally: Tally, until: float) -> None:
        super().__init__(name=f"soak-client-{number}")
        self.number = number
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        self.refs = refs
        self.tally = tally
        self.until = until
        self.rng = random.Random(number)
        self.own: list[int] = []
        self.created = 0
        self.crash: BaseException | None = None

    def run(self) -> None:
        try:
            while time.monotonic() < self.until:
                self.step()
        except BaseException as exc:  # reported by the test, with the thread's name
            self.crash = exc
        finally:
            self.http.close()

    def step(self) -> None:
        if len(self.own) < OWN_DEPLOYMENTS:
            self.create()
            return
        deployment = self.rng.choice(self.own)
        op = self.rng.choices(["patch", "scale", "restart", "read", "delete"], weights=[3, 3, 2, 4, 1])[0]
        getattr(self, op)(deployment)

    def call(self, op: str, method: str, path: str, *, expected: set[int], body: Any = None) -> httpx.Response:
        response = self.http.request(method, path, json=body)
        self.tally.record(op, response, write=method != "GET", expected=expected)
        return response

    def create(self) -> None:
        self.created += 1
        name = f"soak-{self.number}-{self.created}"
        body = {
            "name": name,
            "served_model_name": name,
            "model": self.refs["model"],
            "target": self.refs["target"],
            "replicas": self.rng.choice([0, 1]),
            "max_replicas": 4,
            "max_model_len": 256,
            "max_tokens_cap": 64,
        }
        response = self.call("create", "POST", "/api/v1/deployments/", expected={201}, body=body)
        if response.status_code == 201:
            self.own.append(int(response.json()["id"]))

    def patch(self, pk: int) -> None:
        body = {"max_tokens_cap": self.rng.randint(16, 128)}
        self.call("patch", "PATCH", f"/api/v1/deployments/{pk}/", expected={200, 202}, body=body)

    def scale(self, pk: int) -> None:
        body = {"replicas": self.rng.randint(0, 2)}
        self.call("scale", "POST", f"/api/v1/deployments/{pk}/scale/", expected={200, 202}, body=body)

    def restart(self, pk: int) -> None:
        self.call("restart", "POST", f"/api/v1/deployments/{pk}/restart/", expected={200, 202})

    def read(self, pk: int) -> None:
        self.call("read", "GET", f"/api/v1/deployments/{pk}/", expected={200})
        self.call("list", "GET", "/api/v1/deployments/?limit=50", expected={200})
        self.call("replicas", "GET", f"/api/v1/replicas/?deployment={pk}", expected={200})

    def delete(self, pk: int) -> None:
        self.own.remove(pk)
        self.call("delete", "DELETE", f"/api/v1/deployments/{pk}/", expected={202, 204})


def demo_refs(url: str, token: str) -> dict[str, int]:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        models = http.get("/api/v1/models/", params={"name": "tiny-llama"}).json()["results"]
        targets = http.get("/api/v1/targets/").json()["results"]
    return {"model": int(models[0]["id"]), "target": next(int(t["id"]) for t in targets if t["name"] == "local")}


def ready_replicas(url: str, token: str) -> int:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        return int(http.get("/api/v1/replicas/", params={"state": "ready", "limit": 1}).json()["count"])


def run_load(url: str, token: str, refs: dict[str, int]) -> tuple[Tally, float, list[str]]:
    tally = Tally()
    started = time.monotonic()
    clients = [Client(n, url, token, refs, tally, started + LOAD_SECONDS) for n in range(CLIENTS)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=LOAD_SECONDS + 120)
    crashes = [f"{c.name}: {c.crash!r}" for c in clients if c.crash is not None or c.is_alive()]
    return tally, time.monotonic() - started, crashes


# ----------------------------------------------------------------------------- the test


def test_quickstart_on_sqlite_takes_concurrent_api_writes_without_locking(tmp_path, tiny_model_dir) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    quickstart = Quickstart(data_dir, tiny_model_dir)
    begun = time.monotonic()
    try:
        quickstart.start()
        start_up = time.monotonic() - begun
        token = access_token(quickstart.url)
        tally, duration, crashes = run_load(quickstart.url, token, demo_refs(quickstart.url, token))
        ready = ready_replicas(quickstart.url, token)
    finally:
        quickstart.stop()
    logs = quickstart.logs()
    locked = {name: text.count(LOCKED[0]) for name, text in logs.items() if LOCKED[0] in text}
    db_errors = {name: text.count(DATABASE_ERROR) for name, text in logs.items() if DATABASE_ERROR in text}
    figures = {
        "start_up_seconds": round(start_up, 1),
        "load_seconds": round(duration, 1),
        "clients": CLIENTS,
        "requests": tally.reads + tally.writes,
        "writes": tally.writes,
        "reads": tally.reads,
        "statuses": dict(sorted(tally.statuses.items())),
        "ready_replicas_at_end": ready,
        "failures": tally.failures[:20],
        "locked_in_logs": locked,
        "database_errors_in_logs": db_errors,
        "worker_tasks_run": logs.get("worker.log", "").count("] succeeded in "),
    }
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    assert not crashes, crashes
    assert not tally.failures, tally.failures[:20]
    assert not locked, f"'database is locked' in the quickstart's logs: {locked}"
    assert not db_errors, f"database errors in the quickstart's logs: {db_errors}"
    assert tally.writes >= 100, figures  # the load really ran: at least a hundred writes in the window
    assert ready >= 1, "no replica became ready: the worker did not reconcile alongside the API writes"
