"""Probe endpoints for orchestrators: ``/healthz`` (the process answers) and ``/readyz`` (it can
serve: database and Redis reachable, every migration applied).

Both are unauthenticated and cheap. ``/healthz`` touches nothing outside the process, so a
database or Redis outage never makes Kubernetes restart healthy web pods. ``/readyz`` opens its
own short-timeout connections, so a hung database costs a probe a couple of seconds instead of a
request thread, and a failing check names itself without a stack trace or an address (details
go to the log). Migrations do not un-apply, so once the migration check has passed it is not
run again by this process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2
RETRY_AFTER_S = 5
_migrations_applied = False  # latched: see the module docstring


class CheckFailed(Exception):
    """A readiness check did not pass; the message is safe to show to anyone."""


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive and serving HTTP. Nothing else is consulted."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when every check passes, else 503 with ``Retry-After`` and the failed checks."""
    checks: dict[str, str] = {}
    database = _database_connection()
    try:
        for name, check in (
            ("database", lambda: _check_database(database)),
            ("redis", _check_redis),
            ("migrations", lambda: _check_migrations(database, checks)),
        ):
            checks[name] = _run(name, check)
    finally:
        database.close()
    failed = [name for name, result in checks.items() if result != "ok"]
    if not failed:
        return JsonResponse({"status": "ok", "checks": checks})
    response = JsonResponse({"status": "unavailable", "checks": checks, "failed": failed}, status=503)
    response["Retry-After"] = str(RETRY_AFTER_S)
    return response


def forget_migrations_check() -> None:
    """Run the migration check again on the next probe (tests that unapply a migration)."""
    global _migrations_applied
    _migrations_applied = False


def _run(name: str, check: Callable[[], None]) -> str:
    try:
        check()
    except CheckFailed as exc:
        return str(exc)
    except Exception:
        logger.warning("readiness check %s failed", name, exc_info=True)
        return "unreachable"
    return "ok"


def _database_connection() -> BaseDatabaseWrapper:
    """A connection of the probe's own with short timeouts, closed after the probe."""
    wrapper = connections.create_connection(DEFAULT_DB_ALIAS)
    if wrapper.vendor == "postgresql":
        options = dict(wrapper.settings_dict.get("OPTIONS") or {})
        options["connect_timeout"] = CHECK_TIMEOUT_S
        options["options"] = f"-c statement_timeout={CHECK_TIMEOUT_S * 1000}"
        wrapper.settings_dict = {**wrapper.settings_dict, "OPTIONS": options}
    return wrapper


def _check_database(database: BaseDatabaseWrapper) -> None:
    with database.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_redis() -> None:
    # The cache, channel layer and rate limits use REDIS_URL; tasks are enqueued on the broker.
    for url in dict.fromkeys([settings.REDIS_URL, settings.CELERY_BROKER_URL]):
        client = redis.Redis.from_url(url, socket_connect_timeout=CHECK_TIMEOUT_S, socket_timeout=CHECK_TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()


def _check_migrations(database: BaseDatabaseWrapper, checks: dict[str, str]) -> None:
    global _migrations_applied
    if _migrations_applied:
        return
    if checks.get("database") != "ok":
        raise CheckFailed("skipped: database unreachable")
    executor = MigrationExecutor(database)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        raise CheckFailed(f"{len(plan)} unapplied migration(s)")
    _migrations_applied = True
