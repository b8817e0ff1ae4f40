"""Parallel test workers are kept apart (console/settings/workers.py): a worker's Redis databases
and data folder are shifted once, and the processes it starts inherit them unshifted again."""

from __future__ import annotations

import pytest

from console.settings.workers import MARKER, isolate_test_worker, shift_redis_db


def test_outside_xdist_nothing_changes() -> None:
    env = {"REDIS_URL": "redis://127.0.0.1:63790/3", "HANGAR_DATA_DIR": "/srv/data"}
    isolate_test_worker(env)
    assert env == {"REDIS_URL": "redis://127.0.0.1:63790/3", "HANGAR_DATA_DIR": "/srv/data"}


def test_a_worker_gets_its_own_block_once() -> None:
    env = {"PYTEST_XDIST_WORKER": "gw1", "REDIS_URL": "redis://:pw@127.0.0.1:63790/3", "HANGAR_DATA_DIR": "/srv/data"}
    isolate_test_worker(env)
    assert env["REDIS_URL"] == "redis://:pw@127.0.0.1:63790/19"
    assert env["HANGAR_TEST_REDIS_OFFSET"] == "16"
    assert env["HANGAR_DATA_DIR"] == "/srv/data/test-workers/gw1"
    assert env[MARKER] == "gw1"
    inherited = dict(env)  # a process the test starts: same environment, applied again
    isolate_test_worker(inherited)
    assert inherited == env


def test_worker_zero_keeps_the_databases_but_not_the_folder() -> None:
    env = {"PYTEST_XDIST_WORKER": "gw0", "REDIS_URL": "redis://127.0.0.1:63790", "HANGAR_DATA_DIR": "/d"}
    isolate_test_worker(env)
    assert env["REDIS_URL"] == "redis://127.0.0.1:63790/0"
    assert env["HANGAR_DATA_DIR"] == "/d/test-workers/gw0"


def test_a_redis_url_with_a_query_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="must end in /<db>"):
        shift_redis_db("redis://127.0.0.1:63790/0?ssl=true", 16)
