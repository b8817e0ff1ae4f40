"""Fixtures of the deployment-engine tests: a fake driver, deployments, an isolated broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.factories import DeploymentFactory
from tests.workers.fakes import FakeDriver
from workers import reconciler

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _engine_settings(settings: Any, tmp_path: Path) -> None:
    settings.DATA_DIR = tmp_path / "data"
    settings.HANGAR_HEALTH_FAILURE_THRESHOLD = 3
    settings.HANGAR_READY_TIMEOUT = 60.0
    settings.HANGAR_FAILED_RETRY_SECONDS = 30.0
    settings.HANGAR_RECONCILE_LEASE_SECONDS = 30.0
    settings.HANGAR_REPLICA_DRAIN_SECONDS = 0.0  # removals at once; tests of draining set it


@pytest.fixture
def fake_driver() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def run(fake_driver: FakeDriver) -> Any:
    """``run(deployment)`` = one reconcile pass with the fake driver; returns the Outcome."""

    def reconcile_once(deployment: Any, owner: str = "test-worker") -> reconciler.Outcome:
        outcome = reconciler.reconcile(
            deployment.pk, owner=owner, driver_factory=lambda target, tenant_id=None: fake_driver
        )
        if deployment.__class__.objects.filter(pk=deployment.pk).exists():
            deployment.refresh_from_db()
        return outcome

    return reconcile_once


@pytest.fixture
def deployment(db: Any) -> Iterator[Any]:
    yield DeploymentFactory(replicas=2, max_replicas=4)


@pytest.fixture
def test_broker(transactional_db: Any) -> Iterator[str]:
    """Point this process's Celery app at the tests' own broker database, emptied first."""
    import redis

    from console.celery import app
    from tests.workers.processes import test_broker_url

    url = test_broker_url()
    redis.Redis.from_url(url).flushdb()
    # broker_write_url is what producers use; setting broker_url afterwards does not reach it.
    saved = app.conf.broker_write_url
    app.conf.broker_write_url = url
    app._pool = None
    app.amqp._producer_pool = None
    yield url
    app.conf.broker_write_url = saved
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def start_worker(test_broker: str, tmp_path: Path) -> Iterator[Any]:
    """``start_worker(**env)`` -> a running Celery worker (with beat); all stopped at teardown."""
    from tests.workers.processes import Worker, worker_env

    workers: list[Worker] = []

    def start(**extra: str) -> Worker:
        worker = Worker(tmp_path / f"worker-{len(workers)}.log", worker_env(**extra)).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
    # Local replicas outlive workers by design: stop the ones these tests started.
    from workers.drivers import local_driver

    driver = local_driver()
    for replica in driver.list(None):
        driver.remove(replica.backend_id)
