"""Running synchronous ORM code from the gateway's event loop.

All calls share asgiref's single sync thread (``thread_sensitive``), so the gateway holds one
database connection per process, opened on first use and kept. A connection that broke (the
database restarted) is closed and the call retried once.

While the database is unreachable, calls fail at once for ``RETRY_SECONDS`` after a failure
(``DatabaseUnavailable``) instead of each queueing for the sync thread to find out again: the
callers serve from what they last loaded (keys, routes) or keep what they would have written
(usage) until a call succeeds again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_SECONDS = 1.0


class DatabaseUnavailable(OperationalError):
    """The database failed moments ago; not tried again yet."""


class _State:
    retry_at = 0.0  # monotonic; calls before it fail without trying
    down_since: float | None = None


def _call(fn: Callable[..., T], kwargs: dict[str, Any]) -> T:
    try:
        return fn(**kwargs)
    except (InterfaceError, OperationalError):
        if connection.in_atomic_block:
            raise
        connection.close()
        return fn(**kwargs)


def _call_once(fn: Callable[..., T], kwargs: dict[str, Any]) -> T:
    try:
        return fn(**kwargs)
    except (InterfaceError, OperationalError):
        connection.close()  # the next call opens a new connection
        raise


def database_down() -> bool:
    """Whether the last call found the database unreachable (and none succeeded since)."""
    return _State.down_since is not None


async def run_db(fn: Callable[..., T], /, **kwargs: Any) -> T:
    return await _run(_call, fn, kwargs)


async def run_db_once(fn: Callable[..., T], /, **kwargs: Any) -> T:
    """``run_db`` without the retry: for writes that must not be applied twice (a commit whose
    answer was lost may have happened)."""
    return await _run(_call_once, fn, kwargs)


async def _run(
    call: Callable[[Callable[..., T], dict[str, Any]], T], fn: Callable[..., T], kwargs: dict[str, Any]
) -> T:
    if _State.down_since is not None and time.monotonic() < _State.retry_at:
        raise DatabaseUnavailable("the database was unreachable moments ago")
    try:
        result = await sync_to_async(call, thread_sensitive=True)(fn, kwargs)
    except (InterfaceError, OperationalError):
        now = time.monotonic()
        _State.retry_at = now + RETRY_SECONDS
        if _State.down_since is None:
            _State.down_since = now
            logger.warning("database unreachable; serving cached keys and routes, buffering usage")
        raise
    if _State.down_since is not None:
        logger.warning("database reachable again after %.1f s", time.monotonic() - _State.down_since)
        _State.down_since = None
    return result
