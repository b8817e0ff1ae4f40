"""Fixtures shared by the whole suite: users with roles in tenants, API clients, the tiny model."""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.factories import MembershipFactory, TenantFactory, UserFactory
from tests.support.processes import RUNNING, running_reports

REPO_ROOT = Path(__file__).resolve().parent.parent
_test_database_guards: list[Any] = []  # connections holding a test database's lock until exit


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report ends with the log tails of the processes it had running."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and (tails := running_reports()):
        report.sections.append(("processes still running (log tails)", tails))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with slow tests first: pytest-xdist hands whole files to its workers in this order,
    so the long ones start at once and the short ones fill in around them (no long tail)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the order within a file stays


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Processes a failed test left running (its teardown never came) are stopped here."""
    for process in reversed(RUNNING[:]):
        process.stop()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: Any) -> None:
    """Claim the test database for this session before pytest-django (re)creates it."""
    claim_test_database()


def claim_test_database() -> None:
    """Hold a session-long lock on the test database's name, or stop this session at once.

    Two sessions with the same test database name (``make test`` twice, from one checkout or
    two) otherwise share it: the second drops and recreates it while the first holds no
    connection between transactional tests, then each one's per-test TRUNCATE wipes the other's
    rows mid-test (seen as an API key "invalid" moments after the dashboard created it, and as
    rows whose parent vanished). Call it wherever ``django_db_modify_db_settings`` is overridden,
    after the test database's name is final.
    """
    import psycopg
    from django.db import connection

    settings = connection.settings_dict
    if connection.vendor != "postgresql" or _test_database_guards:
        return  # a session claims the one database it creates, however its fixtures are overridden
    name = connection.creation._get_test_db_name()
    params = {
        "host": settings["HOST"] or None,
        "port": settings["PORT"] or None,
        "user": settings["USER"] or None,
        "password": settings["PASSWORD"] or None,
        "autocommit": True,
    }
    try:  # every session locks in one database: advisory locks are per database
        guard = psycopg.connect(dbname="postgres", **params)
    except psycopg.OperationalError:
        guard = psycopg.connect(dbname=settings["NAME"], **params)
    row = guard.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [f"hangar-test-database:{name}"]).fetchone()
    if not (row and row[0]):
        guard.close()
        pytest.exit(
            f"Another test session is using the test database {name!r}; sharing it would let each "
            "session's flushes delete the other's rows mid-test. Wait for it to finish, or give this "
            "run a database of its own, e.g. DATABASE_URL=${DATABASE_URL%/*}/hangar_$USER.",
            returncode=4,
        )
    _test_database_guards.append(guard)


@pytest.fixture
def make_member(db: Any) -> Callable[..., Any]:
    """``make_member(role, tenant=None)`` -> a user holding ``role`` in ``tenant`` (new if None)."""

    def make(role: str, tenant: Any = None, username: str | None = None) -> Any:
        tenant = tenant or TenantFactory()
        user = UserFactory(username=username) if username else UserFactory()
        MembershipFactory(user=user, tenant=tenant, role=role)
        return user

    return make


@pytest.fixture
def private_redis_namespace(settings: Any) -> None:
    """Groups and cache keys of this test only: other suites and dev servers share the Redis,
    and their deployment and replica ids (hence group and cache key names) repeat ours."""
    tag = uuid.uuid4().hex[:12]
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    layers["default"]["CONFIG"]["prefix"] = f"asgi-test-{tag}"
    settings.CHANNEL_LAYERS = layers
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["KEY_PREFIX"] = f"hangar-test-{tag}"
    settings.CACHES = caches


@pytest.fixture
def tenant(db: Any) -> Any:
    return TenantFactory()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def client_for() -> Callable[[Any], APIClient]:
    def make(user: Any) -> APIClient:
        client = APIClient()
        client.force_authenticate(user)
        return client

    return make


@pytest.fixture(scope="session", autouse=True)
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's one model root (``<root>/<tenant-slug>/``, ``<root>/_shared/``), set here and
    in the environment, so the workers and servers the tests start judge sources the same way."""
    from django.test import override_settings

    root = tmp_path_factory.mktemp("model-root").resolve()
    saved = os.environ.get("HANGAR_MODEL_ROOTS")
    os.environ["HANGAR_MODEL_ROOTS"] = str(root)
    with override_settings(HANGAR_MODEL_ROOTS=[str(root)]):
        yield root
    if saved is None:
        os.environ.pop("HANGAR_MODEL_ROOTS", None)
    else:
        os.environ["HANGAR_MODEL_ROOTS"] = saved


@pytest.fixture(scope="session")
def tiny_model_dir(model_root: Path) -> Path:
    """The tiny Llama model built once per session (deterministic, seconds to build), published
    in the shared model folder so that every tenant may register it."""
    from django.conf import settings

    from workers.runtime.tinymodel import build_tiny_model

    return build_tiny_model(model_root / settings.HANGAR_MODEL_SHARED_FOLDER / "tiny-llama")
