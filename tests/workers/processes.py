"""Real Celery worker processes for the engine's integration tests (on tests.support's harness)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests.support.processes import REPO_ROOT, Process
from tests.support.workers import redis_db

CELERY = REPO_ROOT / ".venv" / "bin" / "celery"
# A broker database of our own: a developer's worker on the default one must not eat our tasks.
# Two test sessions at once (two checkouts) each need their own: HANGAR_TEST_BROKER_DB.
# Test workers under pytest-xdist shift it into their own block (tests/support/workers.py).
TEST_BROKER_DB = redis_db(int(os.environ.get("HANGAR_TEST_BROKER_DB", "13")))


def test_broker_url() -> str:
    base = settings.REDIS_URL.rsplit("/", 1)[0]
    return f"{base}/{TEST_BROKER_DB}"


def test_database_url() -> str:
    """The URL of the database pytest-django created (``test_<name>``), for subprocesses."""
    s = connection.settings_dict
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


class Worker(Process):
    """``celery -A console worker -B`` in its own session, so kill -9 takes its pool children too."""

    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        argv = [
            str(CELERY),
            "-A",
            "console",
            # JSON logs: no banner either, as the console image's entrypoint does it.
            *(["--quiet"] if env.get("HANGAR_LOG_FORMAT") == "json" else []),
            "worker",
            "-B",
            "--schedule",
            str(log_path.with_suffix(".schedule")),
            "--concurrency",
            "2",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
        ]
        super().__init__(log_path.stem, argv, log_path=log_path, env=env)

    def start(self) -> Worker:
        super().start()
        self.wait_ready(lambda: "ready." in self.log(), timeout=60, message="celery worker ready")
        return self

    def stop(self, grace: float = 0.0) -> int:
        """Tests need no graceful shutdown: a late-acked task it held is redelivered or resynced."""
        return self.kill()


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
