"""The worker liveness probe the chart uses (`hangar worker-alive`, deploy/console/entrypoint.sh)
against a real Celery worker: it passes while the worker's event loop runs, fails once the loop
has been frozen longer than the allowed age, passes again when it resumes, and fails after the
worker has stopped."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import REPO_ROOT, Process
from tests.support.waiting import wait_for

ENTRYPOINT = REPO_ROOT / "deploy" / "console" / "entrypoint.sh"
CELERY = REPO_ROOT / ".venv" / "bin" / "celery"
MAX_AGE_S = 2


def probe(heartbeat: Path, worker: Process | None = None) -> bool:
    if worker is not None:
        worker.check_alive()  # fails with the worker's log tail
    env = {"PATH": os.environ["PATH"], "HANGAR_WORKER_HEARTBEAT_FILE": str(heartbeat)}
    result = subprocess.run(
        ["bash", str(ENTRYPOINT), "worker-alive", str(MAX_AGE_S)], env=env, capture_output=True, timeout=10
    )
    return result.returncode == 0


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[Process, Path]]:
    heartbeat = tmp_path / "worker-alive"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "console.settings.test",
        "HANGAR_WORKER_HEARTBEAT_FILE": str(heartbeat),
        "HANGAR_WORKER_HEARTBEAT_SECONDS": "0.2",
    }
    argv = [
        # A queue of its own: this worker must not take tasks other tests left on the broker.
        *(str(CELERY), "-A", "console", "worker", "-Q", f"liveness-{os.getpid()}", "-c", "1"),
        *("--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"liveness-{os.getpid()}@%h"),
    ]
    proc = Process("worker", argv, log_path=tmp_path / "worker.log", env=env).start()
    try:
        yield proc, heartbeat
    finally:
        if proc.poll() is None:
            proc.kill()  # SIGCONT first: it may still be frozen


@pytest.mark.slow
def test_worker_alive_follows_the_event_loop(worker: tuple[Process, Path]) -> None:
    proc, heartbeat = worker
    assert not probe(heartbeat), "no heartbeat before the worker started"
    wait_for(lambda: probe(heartbeat, proc), timeout=90, message="worker heartbeat file")

    os.kill(proc.pid, signal.SIGSTOP)  # the main process runs the event loop
    wait_for(lambda: not probe(heartbeat), timeout=MAX_AGE_S + 10, message="probe failing while frozen")
    os.kill(proc.pid, signal.SIGCONT)
    wait_for(lambda: probe(heartbeat), timeout=10, message="probe passing after the loop resumed")

    proc.signal(signal.SIGTERM, group=False)
    proc.wait(timeout=60)
    assert not heartbeat.exists()
    assert not probe(heartbeat)
