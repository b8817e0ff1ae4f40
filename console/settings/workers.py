"""Parallel test workers (pytest-xdist) kept apart: each ``gw<N>`` gets its own Redis databases
and data folder, so rate-limit buckets, Celery queues, channel groups, uploads and local
replicas of one worker never meet another's (both number their rows from 1).

Applied once per worker, to the environment: the processes a test starts (web, Celery, gateway)
inherit the shifted values and a marker, and do not shift them again.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from pathlib import Path

DATABASES_PER_WORKER = 16  # deploy/dev/services.sh starts Redis with 64: room for 4 workers
MARKER = "HANGAR_TEST_WORKER_ISOLATED"
REDIS_DB = re.compile(r"^(?P<base>redis://[^/]*)(?:/(?P<db>\d*))?$")


def worker_index(env: MutableMapping[str, str]) -> int | None:
    """``N`` of ``PYTEST_XDIST_WORKER=gwN``, or None outside xdist."""
    name = env.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else None


def shift_redis_db(url: str, offset: int) -> str:
    match = REDIS_DB.match(url)
    if not match:
        raise ValueError(f"REDIS_URL must end in /<db> to be shared by test workers: {url!r}")
    return f"{match['base']}/{int(match['db'] or 0) + offset}"


def isolate_test_worker(env: MutableMapping[str, str]) -> None:
    index = worker_index(env)
    if index is None or env.get(MARKER) == env["PYTEST_XDIST_WORKER"]:
        return
    offset = index * DATABASES_PER_WORKER
    env["REDIS_URL"] = shift_redis_db(env.get("REDIS_URL", "redis://127.0.0.1:6379/0"), offset)
    env["HANGAR_TEST_REDIS_OFFSET"] = str(offset)
    data = Path(env.get("HANGAR_DATA_DIR") or Path(__file__).resolve().parents[2] / "var")
    env["HANGAR_DATA_DIR"] = str(data / "test-workers" / env["PYTEST_XDIST_WORKER"])
    env[MARKER] = env["PYTEST_XDIST_WORKER"]
