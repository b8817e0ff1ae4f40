"""Real Celery worker processes for the engine's integration tests, and polling helpers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

REPO_ROOT = Path(__file__).resolve().parents[2]
CELERY = REPO_ROOT / ".venv" / "bin" / "celery"
# A broker database of our own: a developer's worker on the default one must not eat our tasks.
# Two test sessions at once (two checkouts) each need their own: HANGAR_TEST_BROKER_DB.
TEST_BROKER_DB = int(os.environ.get("HANGAR_TEST_BROKER_DB", "13"))


def wait_for(predicate: Any, timeout: float, interval: float = 0.1, message: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{message or 'condition'} not met within {timeout} s (last value: {last!r})")


def test_broker_url() -> str:
    base = settings.REDIS_URL.rsplit("/", 1)[0]
    return f"{base}/{TEST_BROKER_DB}"


def test_database_url() -> str:
    """The URL of the database pytest-django created (``test_<name>``), for subprocesses."""
    s = connection.settings_dict
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


class Worker:
    """``celery -A console worker -B`` in its own session, so kill -9 takes its pool children too."""

    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        schedule = self.log_path.with_suffix(".schedule")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(CELERY),
                    "-A",
                    "console",
                    # JSON logs: no banner either, as the console image's entrypoint does it.
                    *(["--quiet"] if self.env.get("HANGAR_LOG_FORMAT") == "json" else []),
                    "worker",
                    "-B",
                    "--schedule",
                    str(schedule),
                    "--concurrency",
                    "2",
                    "--loglevel",
                    "INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--hostname",
                    f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
                ],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(lambda: "ready." in self.log(), timeout=60, message="celery worker ready")
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill9(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """Tests need no graceful shutdown: a late-acked task it held is redelivered or resynced."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill9()


def worker_env(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "console.settings.test",
        "DATABASE_URL": test_database_url(),
        "CELERY_BROKER_URL": test_broker_url(),
        "HANGAR_DATA_DIR": str(settings.DATA_DIR),
        "HANGAR_RESYNC_INTERVAL": "1",
        "HANGAR_RECONCILE_LEASE_SECONDS": "4",
        "HANGAR_HEALTH_FAILURE_THRESHOLD": "2",
        "HANGAR_RUNTIME_IMAGE": settings.HANGAR_RUNTIME_IMAGE,
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env
